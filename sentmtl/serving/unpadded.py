"""`encode(..., unpadded=True)`: batches without padding, run by flash attention's variable-length kernels.

A batch's sentences are concatenated into one row (`flatten_ids`, transformers' `DataCollatorWithFlattening` layout:
`input_ids` `[1, total tokens]`, `position_ids` restarting at each sentence), and the sequence boundaries
(`cu_seq_lens`, the cumulative lengths) go to the encoder as transformers' flash-attention kwargs (`cu_seq_lens_q` /
`_k`, `max_length_q` / `_k`), so attention never crosses from one sentence into the next and no padded token is
computed. Each sentence's vector is then pooled from its own span of the row (`pool_flattened`).

Only on a CUDA GPU with flash-attn installed, an encoder whose transformers class supports flash attention and takes
`position_ids`, weights in half precision (flash attention has no fp32 kernels), and mean or cls pooling
(`check_unpadded`). Transformers' SDPA and eager attention read the same layout from `position_ids` alone (a
block-diagonal mask: no speed gain), which is how the tests check this path on a CPU.
"""

import contextlib
import inspect

import numpy as np
import torch

from ..model.modeling_sentmtl import SentMtlModel
from .half_weights import HALF_WEIGHTS

FLASH_ATTENTION = "flash_attention_2"
FLASH_ATTN_INSTALL = "pip install flash-attn --no-build-isolation"


def flatten_ids(batch: list[list[int]], position_start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """`(input_ids [1, total], position_ids [1, total], cu_seq_lens [len(batch) + 1], longest)`, int64 (flash
    attention's int32 boundaries are made by `embed_flattened`). Positions restart at `position_start` for each
    sentence (RoBERTa-like encoders number them from `padding_idx + 1`: `position_start`)."""
    lengths = np.fromiter((len(ids) for ids in batch), dtype=np.int64, count=len(batch))
    if len(batch) == 0 or lengths.min() < 1:
        raise ValueError("flatten_ids needs at least one sentence, each with at least one token.")
    cu_seq_lens = np.concatenate([[0], np.cumsum(lengths)])
    input_ids = np.fromiter((t for ids in batch for t in ids), dtype=np.int64, count=int(cu_seq_lens[-1]))
    # Each token's index within its sentence: its index in the row less its sentence's start.
    position_ids = np.arange(cu_seq_lens[-1]) - np.repeat(cu_seq_lens[:-1], lengths) + position_start
    return input_ids[None], position_ids[None], cu_seq_lens, int(lengths.max())


def pool_flattened(token_states: torch.Tensor, cu_seq_lens: torch.Tensor, mode: str) -> torch.Tensor:
    """Flattened token states `[total, hidden]` (or `[1, total, hidden]`) → one vector per sentence `[n, hidden]`,
    fp32: `mean` averages each sentence's span `cu_seq_lens[i]:cu_seq_lens[i + 1]` (what `Pooling` gives the padded
    batch, whose padding never counts), `cls` takes its first token."""
    states = token_states.reshape(-1, token_states.shape[-1]).float()  # the mean's sums and division in fp32
    starts = cu_seq_lens[:-1].long()
    if mode == "cls":
        return states[starts]
    if mode != "mean":
        raise ValueError(f"pooling={mode!r} has no unpadded form; unpadded batches support mean and cls pooling.")
    lengths = cu_seq_lens[1:].long() - starts
    sentence_of_token = torch.repeat_interleave(torch.arange(len(lengths), device=states.device), lengths)
    sums = states.new_zeros(len(lengths), states.shape[-1]).index_add_(0, sentence_of_token, states)
    return sums / lengths.unsqueeze(1).to(states.dtype)


def position_start(encoder) -> int:
    """The position id of a sentence's first token when the encoder numbers them itself: `padding_idx + 1` for
    RoBERTa-like embeddings (which keep `padding_idx`), 0 for BERT-like ones."""
    padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
    return padding_idx + 1 if isinstance(padding_idx, int) else 0


def embed_flattened(
    model: SentMtlModel, input_ids, position_ids, cu_seq_lens, max_length: int, pooled: bool = False
) -> torch.Tensor:
    """`model.embed` (or `model.pool` when `pooled`) of a flattened batch: `[n, embedding_size]` in fp32. The
    boundaries reach flash attention as its variable-length kwargs; other attention implementations read them from
    `position_ids`."""
    boundaries = cu_seq_lens.to(torch.int32)
    out = model.encoder(
        input_ids=input_ids,
        position_ids=position_ids,
        cu_seq_lens_q=boundaries,
        cu_seq_lens_k=boundaries,
        max_length_q=max_length,
        max_length_k=max_length,
    )
    vectors = pool_flattened(out.last_hidden_state, cu_seq_lens, model.config.pooling)
    return vectors if pooled else model.project(vectors)


def check_unpadded(model: SentMtlModel, device: torch.device, precision: str, compile: bool) -> None:
    """Refuse, in one line, what `unpadded=True` cannot run: most fixable last (the architecture and pooling cannot
    change; flash-attn can be installed; the device and the precision are arguments)."""
    encoder = model.encoder
    architecture = type(encoder).__name__
    if not getattr(encoder, "_supports_flash_attn", False):
        raise ValueError(
            f"unpadded batches need flash attention, which transformers does not support for {architecture} "
            f"({model.config.encoder_config.model_type}); embed it padded (unpadded=False)."
        )
    if "position_ids" not in inspect.signature(encoder.forward).parameters:
        raise ValueError(
            f"unpadded batches restart position_ids at each sentence; {architecture} takes no position_ids: "
            "embed it padded (unpadded=False)."
        )
    if model.config.pooling not in ("mean", "cls"):
        raise ValueError(
            f"pooling={model.config.pooling!r} reads the encoder's pooler on a padded batch; unpadded batches "
            "support mean and cls pooling (embed this model padded)."
        )
    if compile:
        raise ValueError("unpadded=True runs eagerly: compile=True is for padded batches (drop one).")
    require_flash_attn()
    if device.type != "cuda":
        raise ValueError(f"unpadded=True runs flash attention, which needs a CUDA GPU; the model is on {device}.")
    if precision not in HALF_WEIGHTS:
        raise ValueError(
            f"unpadded=True with precision={precision!r}: flash attention runs fp16 / bf16 only; "
            f"choose precision={' or '.join(repr(p) for p in HALF_WEIGHTS)}."
        )


def require_flash_attn() -> None:
    """flash-attn importable, or a one-line ImportError that names the install."""
    try:
        import flash_attn  # noqa: F401
    except ImportError as err:  # not installed, or built for another torch / CUDA
        raise ImportError(f"unpadded batches need flash-attn ({err}): {FLASH_ATTN_INSTALL}") from None


@contextlib.contextmanager
def flash_attention(model: SentMtlModel):
    """The encoder switched to transformers' flash attention for the block, then back to what it had (the config
    object is the model's own, `model.config.encoder_config`, so a later save sees no change)."""
    encoder = model.encoder
    previous = encoder.config._attn_implementation
    try:
        encoder.set_attn_implementation(FLASH_ATTENTION)
        # Every part that reads a config must now read flash attention: a layer left on another implementation
        # would attend across the flattened row's sentences, silently. (transformers only logs a warning where
        # a class cannot switch, e.g. remote code.)
        stale = sorted(
            {
                f"{name or type(module).__name__} ({module.config._attn_implementation})"
                for name, module in encoder.named_modules()
                if getattr(getattr(module, "config", None), "_attn_implementation", FLASH_ATTENTION) != FLASH_ATTENTION
            }
        )
        if stale:
            raise ValueError(
                f"unpadded=True: {type(encoder).__name__} did not switch every layer to {FLASH_ATTENTION} "
                f"(still: {', '.join(stale[:3])}{' …' if len(stale) > 3 else ''}); embed with padded batches."
            )
        yield model
    finally:
        encoder.set_attn_implementation(previous)


def flattened_inputs(batch, position_start_id: int, device) -> tuple:
    """`flatten_ids` as tensors on `device`: `(input_ids, position_ids, cu_seq_lens, longest)`."""
    input_ids, position_ids, cu_seq_lens, longest = flatten_ids(batch, position_start_id)
    to = lambda x: torch.from_numpy(x).to(device)  # noqa: E731
    return to(input_ids), to(position_ids), to(cu_seq_lens), longest
