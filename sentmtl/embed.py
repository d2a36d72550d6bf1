"""`encode(...)`: sentences in, unit-norm float32 embeddings out (batched by length, order restored)."""

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from .configuration_sentmtl import SentMtlConfig
from .encoders import resolve_encoder
from .modeling_sentmtl import SentMtlModel


def is_sentmtl_checkpoint(name_or_path) -> bool:
    """True for a local folder saved by `SentMtlModel.save_pretrained`."""
    config_file = Path(str(name_or_path)) / "config.json"
    if not config_file.is_file():
        return False
    return json.loads(config_file.read_text()).get("model_type") == SentMtlConfig.model_type


def load_model_and_tokenizer(name_or_path=None, **config_overrides):
    """A `SentMtlModel` and its tokenizer from a sentmtl checkpoint, or a fresh model around a plain encoder.

    `None` means the bundled all-MiniLM-L6-v2. Only a fresh model takes `config_overrides`.
    """
    if name_or_path is not None and is_sentmtl_checkpoint(name_or_path):
        if config_overrides:
            raise ValueError(
                f"{name_or_path} is a trained sentmtl checkpoint: its architecture is fixed by its config.json, "
                f"so {sorted(config_overrides)} cannot be overridden."
            )
        return AutoModel.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path)
    model = SentMtlModel.from_encoder(name_or_path, **config_overrides)
    return model, AutoTokenizer.from_pretrained(resolve_encoder(name_or_path))


def default_max_length(tokenizer: PreTrainedTokenizerBase, model: SentMtlModel) -> int:
    """The longest input the encoder accepts (tokenizers often report a huge `model_max_length` sentinel)."""
    limit = getattr(model.config.encoder_config, "max_position_embeddings", 512)
    return min(tokenizer.model_max_length, limit)


@torch.inference_mode()
def encode(
    model,
    sentences: list[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    batch_size: int = 64,
    max_length: int | None = None,
    show_progress_bar: bool | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Embed `sentences` with a `SentMtlModel` (or a path to one); returns float32 `[n, embedding_size]` in input order.

    Sentences are sorted by token count so each batch pads only to its own longest member, then put back.
    """
    if isinstance(model, (str, Path)):
        model, loaded_tokenizer = load_model_and_tokenizer(model)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError("encode() needs the tokenizer that goes with the model (or a checkpoint path as `model`).")
    if isinstance(sentences, str):
        sentences = [sentences]
    sentences = list(sentences)
    if not sentences:
        return np.zeros((0, model.config.embedding_size), dtype=np.float32)
    if device is not None:
        model.to(device)
    was_training = model.training
    model.eval()

    max_length = max_length or default_max_length(tokenizer, model)
    tokenized = tokenizer(sentences, truncation=True, max_length=max_length)["input_ids"]
    order = np.argsort([-len(ids) for ids in tokenized], kind="stable")
    if show_progress_bar is None:
        show_progress_bar = len(sentences) > 10 * batch_size
    out = np.empty((len(sentences), model.config.embedding_size), dtype=np.float32)
    target = next(model.parameters()).device
    for start in tqdm(range(0, len(order), batch_size), desc="Embedding", disable=not show_progress_bar):
        index = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [tokenized[i] for i in index]}, return_tensors="pt")
        batch = {key: value.to(target) for key, value in batch.items()}
        embeddings = model.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        out[index] = embeddings.float().cpu().numpy()
    model.train(was_training)
    return out
