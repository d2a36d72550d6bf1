"""sentmtl: fine-tune a pretrained encoder into a multi-task sentence transformer with the Hugging Face stack."""

from . import _moved
from .model.configuration_sentmtl import LOSS_WEIGHTINGS, POOLING_MODES, SentMtlConfig
from .model.modeling_sentmtl import (
    Pooling,
    SentMtlModel,
    SentMtlOutput,
    SentMtlPreTrainedModel,
    register_auto_classes,
)

__version__ = "0.3.0.dev0"

register_auto_classes()
_moved.install()  # 0.2's module paths (`sentmtl.trainer`, ...) still import, with a DeprecationWarning


def __getattr__(name):
    # `encode` pulls in the tokenizer stack; import it on first use so `import sentmtl` stays light.
    if name == "encode":
        from .serving.embed import encode

        return encode
    if name in ("load_model_and_tokenizer", "is_sentmtl_checkpoint"):
        from .serving import loading

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
