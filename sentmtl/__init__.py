"""sentmtl: fine-tune a pretrained encoder into a multi-task sentence transformer with the Hugging Face stack."""

from .configuration_sentmtl import LOSS_WEIGHTINGS, POOLING_MODES, SentMtlConfig
from .modeling_sentmtl import (
    Pooling,
    SentMtlModel,
    SentMtlOutput,
    SentMtlPreTrainedModel,
    register_auto_classes,
)

__version__ = "0.2.0"

register_auto_classes()


def __getattr__(name):
    # `encode` pulls in the tokenizer stack; import it on first use so `import sentmtl` stays light.
    if name == "encode":
        from .embed import encode

        return encode
    if name in ("load_model_and_tokenizer", "is_sentmtl_checkpoint"):
        from . import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'sentmtl' has no attribute {name!r}")


__all__ = [
    "LOSS_WEIGHTINGS",
    "POOLING_MODES",
    "Pooling",
    "SentMtlConfig",
    "SentMtlModel",
    "SentMtlOutput",
    "SentMtlPreTrainedModel",
    "encode",
    "is_sentmtl_checkpoint",
    "load_model_and_tokenizer",
    "register_auto_classes",
]
