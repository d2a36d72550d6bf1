"""The one place that loads models: a sentmtl checkpoint (folder or Hub id) or a fresh model around a plain encoder."""

import logging

from transformers import AutoTokenizer, PretrainedConfig

from .configuration_sentmtl import SentMtlConfig
from .encoders import resolve_encoder, weights_loading_kwargs
from .modeling_sentmtl import SentMtlModel

logger = logging.getLogger(__name__)


def resolved_model_type(name_or_path) -> str | None:
    """`model_type` of the config that `from_pretrained(name_or_path)` would read: a folder, or a Hub id resolved
    through the Hub cache (offline too). None when there is no config to read."""
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(resolve_encoder(name_or_path))
    except (OSError, ValueError):
        return None
    return config_dict.get("model_type")


def is_sentmtl_checkpoint(name_or_path) -> bool:
    """True for a model saved by `SentMtlModel.save_pretrained`, local or on the Hub (decided by its config's
    `model_type`, not by where it lives)."""
    return name_or_path is not None and resolved_model_type(name_or_path) == SentMtlConfig.model_type


def load_model_and_tokenizer(name_or_path=None, allow_pickle_weights: bool = False, **config_overrides):
    """A `SentMtlModel` and its tokenizer from a sentmtl checkpoint, or a fresh model around a plain encoder.

    `None` means the bundled all-MiniLM-L6-v2. Only a fresh model takes `config_overrides`. Weights load from
    safetensors only, unless `allow_pickle_weights` (a pickle can run code when loaded).
    """
    if is_sentmtl_checkpoint(name_or_path):
        if config_overrides:
            raise ValueError(
                f"{name_or_path} is a trained sentmtl checkpoint: its architecture is fixed by its config.json, "
                f"so {sorted(config_overrides)} cannot be overridden."
            )
        model = SentMtlModel.from_pretrained(name_or_path, **weights_loading_kwargs(name_or_path, allow_pickle_weights))
        return model, AutoTokenizer.from_pretrained(name_or_path)
    model = SentMtlModel.from_encoder(name_or_path, allow_pickle_weights=allow_pickle_weights, **config_overrides)
    return model, AutoTokenizer.from_pretrained(resolve_encoder(name_or_path))


__all__ = ["is_sentmtl_checkpoint", "load_model_and_tokenizer", "resolved_model_type"]
