"""`encode(...)`: sentences in, unit-norm float32 embeddings out (batched by length, order restored)."""

import contextlib
import logging
import operator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..model.modeling_sentmtl import SentMtlModel
from ..model.prompts import check_prompt_room, resolve_prompt
from .compiled import compiled_forward
from .half_weights import HALF_WEIGHTS, check_half_weights, half_encoder_weights
from .loading import load_model_and_tokenizer
from .precision import default_device, fast_bf16_available
from .unpadded import check_unpadded, embed_flattened, flash_attention, flattened_inputs, position_start

logger = logging.getLogger(__name__)
# `bf16` is autocast over fp32 weights; the `-weights` precisions cast the encoder's weights (`half_weights`).
PRECISIONS = ("auto", "fp32", "bf16", *HALF_WEIGHTS)


def default_max_length(tokenizer: PreTrainedTokenizerBase, model: SentMtlModel) -> int:
    """The longest input the encoder accepts (tokenizers often report a huge `model_max_length` sentinel)."""
    limit = getattr(model.config.encoder_config, "max_position_embeddings", 512)
    return min(tokenizer.model_max_length, limit)


def encode(
    model,
    sentences: list[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
    show_progress_bar: bool | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    truncated: list[int] | None = None,
    pooled: bool = False,
    truncate_dim: int | None = None,
    prompt_name: str | None = None,
    prompt: str | None = None,
    compile: bool = False,
    unpadded: bool = False,
) -> np.ndarray:
    """Embed `sentences` with a `SentMtlModel` (or a path to one); returns float32 `[n, embedding_size]` in input order.

    Sentences are sorted by token count so each batch pads only to its own longest member, then put back.
    `device`: where to run (default: where the model already is; a model given as a path goes to the GPU when there
    is one). `precision`: `fp32`, `bf16` (autocast; weights stay fp32) or `auto` — bf16 where the device runs it fast
    (CPUs where a short probe measured it faster, `fast_bf16_available`; not CUDA GPUs, where this small encoder
    measured slower in bf16), else fp32. bf16 embeddings keep a cosine similarity of
    about 0.9999 to the fp32 ones (benchmarks/speed.py measures it). `fp16-weights` / `bf16-weights`: the encoder
    runs with its weights cast to fp16 / bf16 for the call (`sentmtl.serving.half_weights`; the model gets its own
    fp32 tensors back, bitwise, even after an error), the pooling's mean, the projection and the normalisation in
    fp32; `auto` never picks them. fp16 weights are refused on a CPU (no faster than fp32 there); bf16 weights run
    on a CPU (cosine >= 0.999 per row to fp32 on the bundled encoder, tested). `pooled=True` returns the encoder's
    pooled vectors `[n, hidden]` before the projection (distillation targets). Sentences longer than `max_length` tokens
    (default: the encoder's limit) are truncated: their indices are appended to `truncated` when given, else logged.
    `truncate_dim`: the embeddings' first `truncate_dim` dimensions, re-normalised (for a model trained with
    `matryoshka_dims`; sentence-transformers' `truncate_dim`). `prompt_name`: one of the model's prompts
    (`config.prompts`) prepended to every sentence; `prompt`: a prefix given as text; neither: the model's
    `default_prompt_name` if it has one (sentence-transformers' rule). `prompt=""` embeds the sentences as they are.
    `compile=True`: the forward compiled by `torch.compile` with dynamic shapes (one graph for every batch length),
    on the first call, and kept on the model for later calls (`sentmtl.serving.compiled`); its embeddings match the
    uncompiled ones to a cosine of at least 0.999 (tested). The first call waits for the compilation. It works with
    the `-weights` precisions too (a graph of their own). `unpadded=True`: each batch's sentences concatenated into
    one row without padding and run by flash attention's variable-length kernels (`sentmtl.serving.unpadded`): a
    CUDA GPU, flash-attn, an encoder transformers runs with flash attention, mean or cls pooling, and a `-weights`
    precision; anything else is refused in one line, as is `compile=True` beside it.
    """
    for name, flag in (("compile", compile), ("unpadded", unpadded)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name}={flag!r}: give True or False.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {', '.join(PRECISIONS)}.")
    if isinstance(model, (str, Path)):
        model, loaded_tokenizer = load_model_and_tokenizer(model)
        tokenizer = tokenizer or loaded_tokenizer
        device = device or default_device()
    if tokenizer is None:
        raise ValueError("encode() needs the tokenizer that goes with the model (or a checkpoint path as `model`).")
    if isinstance(sentences, str):
        sentences = [sentences]
    prefix = resolve_prompt(model.config.prompts, model.config.default_prompt_name, prompt_name, prompt)
    if prefix:
        check_prompt_room({"prompt": prefix}, tokenizer, max_length or default_max_length(tokenizer, model))
        sentences = [prefix + sentence for sentence in sentences]
    sentences = list(sentences)
    width = model.config.hidden_size if pooled else model.config.embedding_size
    if truncate_dim is not None:
        truncate_dim = _as_size(truncate_dim)
        if pooled or truncate_dim is None or not 1 <= truncate_dim <= width:
            raise ValueError(
                f"truncate_dim={truncate_dim!r}: an integer in 1 … the embedding size ({width}), and not "
                "with pooled=True."
            )
        width = truncate_dim
    # Refused before anything runs, for an empty input too; the device the model is on or is about to be moved to.
    target = torch.device(device) if device is not None else next(model.parameters()).device
    check_half_weights(precision, target.type)
    if unpadded:
        check_unpadded(model, target, precision, compile)
    if not sentences:
        return np.zeros((0, width), dtype=np.float32)
    if device is not None:
        # Outside inference mode: parameters moved inside it would become inference tensors, and a model trained
        # after encoding (distillation targets are computed before training) would fail in its first backward.
        model.to(device)
    with contextlib.ExitStack() as stack:
        # Outside inference mode too, for the same reason; undone when the call ends, an error included.
        if precision in HALF_WEIGHTS:
            stack.enter_context(half_encoder_weights(model, HALF_WEIGHTS[precision]))
        if unpadded:
            stack.enter_context(flash_attention(model))
        # An error included, a model being trained stays in training mode (found in review).
        stack.callback(model.train, model.training)
        model.eval()
        stack.enter_context(torch.inference_mode())
        return _encode(
            model,
            sentences,
            tokenizer,
            batch_size,
            max_length,
            show_progress_bar,
            precision,
            truncated,
            pooled,
            width,
            truncate_dim,
            compile,
            unpadded,
        )


def tokenize_sentences(
    tokenizer, sentences: list[str], max_length: int, truncated: list[int] | None = None
) -> list[list[int]]:
    """Token ids of each sentence, cut to `max_length`. The indices of the cut sentences are appended to `truncated`
    when given, else logged: nothing is shortened silently."""
    # Tokenise untruncated first, so over-long sentences are known (and counted), then truncate just those.
    tokenized = tokenizer(sentences, truncation=False, verbose=False)["input_ids"]
    too_long = [i for i, ids in enumerate(tokenized) if len(ids) > max_length]
    if too_long:
        shortened = tokenizer([sentences[i] for i in too_long], truncation=True, max_length=max_length)["input_ids"]
        for i, ids in zip(too_long, shortened):
            tokenized[i] = ids
        if truncated is not None:
            truncated.extend(too_long)
        else:
            logger.warning(
                "%d of %d sentences are longer than %d tokens and were truncated.",
                len(too_long),
                len(sentences),
                max_length,
            )
    return tokenized


def pad_ids(batch: list[list[int]], tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """`(input_ids, attention_mask)` int64 `[len(batch), longest]`, padded on the tokenizer's side with its pad id:
    numpy filling instead of `tokenizer.pad`, whose per-row Python work showed in every embedding batch. No
    token_type_ids, as `encode` never passed them: the encoder's default (0) is what single sentences get from BERT-like
    tokenizers (the ONNX export refuses a tokenizer that gives them other types)."""
    if tokenizer.pad_token_id is None:
        raise ValueError(f"the tokenizer ({type(tokenizer).__name__}) has no pad token: set tokenizer.pad_token.")
    lengths = np.fromiter((len(ids) for ids in batch), dtype=np.int64, count=len(batch))
    width = int(lengths.max()) if len(batch) else 0
    positions = np.arange(width)
    if tokenizer.padding_side == "left":
        mask = positions[None, :] >= (width - lengths)[:, None]
    else:
        mask = positions[None, :] < lengths[:, None]
    input_ids = np.full((len(batch), width), tokenizer.pad_token_id, dtype=np.int64)
    input_ids[mask] = np.fromiter((t for ids in batch for t in ids), dtype=np.int64, count=int(lengths.sum()))
    return input_ids, mask.astype(np.int64)


def length_batches(tokenizer, tokenized: list[list[int]], batch_size: int, show_progress_bar: bool | None, desc: str):
    """`(row indices, input_ids, attention_mask)` per batch, longest sentences first, each batch padded only to its
    own longest member (`pad_ids`); the caller puts the rows back by their indices. A progress bar on long inputs."""
    for index in length_order(tokenized, batch_size, show_progress_bar, desc):
        yield (index, *pad_ids([tokenized[i] for i in index], tokenizer))


def length_order(tokenized: list[list[int]], batch_size: int, show_progress_bar: bool | None, desc: str):
    """The row indices of each batch, longest sentences first (a progress bar on long inputs)."""
    order = np.argsort([-len(ids) for ids in tokenized], kind="stable")
    if show_progress_bar is None:
        show_progress_bar = len(tokenized) > 10 * batch_size
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress_bar):
        yield order[start : start + batch_size]


def _as_size(value) -> int | None:
    """An integer size (numpy integers included; not a bool, not 2.5), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _encode(
    model,
    sentences,
    tokenizer,
    batch_size,
    max_length,
    show_progress_bar,
    precision,
    truncated,
    pooled,
    width,
    truncate_dim,
    compile,
    unpadded,
) -> np.ndarray:
    tokenized = tokenize_sentences(tokenizer, sentences, max_length or default_max_length(tokenizer, model), truncated)
    out = np.empty((len(sentences), width), dtype=np.float32)
    name = "pool" if pooled else "embed"
    forward = compiled_forward(model, name) if compile else getattr(model, name)
    target = next(model.parameters()).device
    # The precision follows the device the model is on, not the best device this machine has.
    use_bf16 = precision == "bf16" or (precision == "auto" and fast_bf16_available(target.type))
    autocast = torch.autocast(device_type=target.type, dtype=torch.bfloat16, enabled=use_bf16)
    for index, embeddings in _batches(
        model, forward, tokenizer, tokenized, batch_size, show_progress_bar, target, pooled, unpadded, autocast
    ):
        if truncate_dim is not None:  # a prefix of the unit vector, made unit again (when the model normalises)
            embeddings = embeddings.float()[:, :truncate_dim]
            embeddings = F.normalize(embeddings, dim=-1) if model.config.normalize else embeddings
        out[index] = embeddings.float().cpu().numpy()
    return out


def _batches(model, forward, tokenizer, tokenized, batch_size, show_progress_bar, target, pooled, unpadded, autocast):
    """`(row indices, embeddings)` per batch: padded (`length_batches`) or flattened (`unpadded`)."""
    if unpadded:
        start = position_start(model.encoder)
        for index in length_order(tokenized, batch_size, show_progress_bar, "Embedding"):
            inputs = flattened_inputs([tokenized[i] for i in index], start, target)
            yield index, embed_flattened(model, *inputs, pooled=pooled)
        return
    for index, input_ids, attention_mask in length_batches(
        tokenizer, tokenized, batch_size, show_progress_bar, "Embedding"
    ):
        input_ids, attention_mask = torch.from_numpy(input_ids).to(target), torch.from_numpy(attention_mask).to(target)
        with autocast:  # around the forward only: a generator suspended inside it would leave it on for the caller
            embeddings = forward(input_ids, attention_mask)
        yield index, embeddings
