"""`ModelArguments`: the flags that build the model (pooling, embedding size, projection, loss weighting, Matryoshka,
LoRA adapters) and their checks, which `SentMtlConfig` owns: building one checks every value before any model
loads."""

from dataclasses import dataclass, field

from ..model.configuration_sentmtl import (
    LOSS_WEIGHTINGS,
    POOLING_MODES,
    PROJECTION_INITS,
    SentMtlConfig,
    check_self_distillation_weight,
)
from ..model.lora import DEFAULT_TARGET_MODULES, PEFT_INSTALL, check_lora_settings, require_peft


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained encoder (Hub name or folder) to build a fresh multi-task model around, or a sentmtl "
            "checkpoint to continue from. Default: the bundled all-MiniLM-L6-v2."
        },
    )
    pooling: str | None = field(
        default=None,
        metadata={
            "help": f"Token pooling: {', '.join(POOLING_MODES)}. Default: the encoder's own, as its "
            "sentence-transformers config names it (1_Pooling; BGE's cls, E5's mean), else mean."
        },
    )
    embedding_size: int = field(default=256, metadata={"help": "Size of the shared projection (the embedding)."})
    projection_init: str = field(
        default="random",
        metadata={
            "help": f"How the fresh projection starts: {', '.join(PROJECTION_INITS)} (needs --embedding_size equal "
            "to the encoder's hidden size, 384 for the bundled MiniLM; training starts at its similarity)."
        },
    )
    normalize: bool = field(default=True, metadata={"help": "L2-normalise the embeddings."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the embedding before the two heads."})
    loss_weighting: str = field(
        default="static",
        metadata={"help": f"How the task losses combine: {', '.join(LOSS_WEIGHTINGS)} (learned, Kendall et al. 2018)."},
    )
    classification_loss_weight: float = field(default=1.0, metadata={"help": "Static weight of the Task A loss."})
    sentiment_loss_weight: float = field(default=1.0, metadata={"help": "Static weight of the Task B loss."})
    distillation_weight: float = field(
        default=10.0,
        metadata={
            "help": "Weight of the `distillation` task the seed's run adds: MSE between each batch's embedding cosine "
            "matrix and the starting encoder's (computed once before training), so that fine-tuning on a small "
            "labelled set keeps general sentence similarity. 0 turns it off (the seed's two tasks alone)."
        },
    )
    head_logit_scale: float = field(
        default=20.0,
        metadata={
            "help": "Initial learnable scale of the heads' logits (they read a unit-norm embedding, whose logits "
            "are otherwise bounded by ~2). 0: no scale, as models before it had."
        },
    )
    matryoshka_dims: list[int] | None = field(
        default=None,
        metadata={
            "help": "Matryoshka embeddings: every loss on the embedding (similarity, contrastive, relational "
            "distillation; not a task's with matryoshka: false) is the mean over these leading dimensions "
            "(re-normalised), e.g. 384 256 128 64 "
            "32 (list the full size too). Then encode(..., truncate_dim=64) keeps most of the quality."
        },
    )
    matryoshka_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per --matryoshka_dims entry (default: 1 each)."}
    )
    matryoshka_self_distillation: float = field(
        default=0.0,
        metadata={
            "help": "With --matryoshka_dims: the weight of a term pulling each shorter prefix's cosine matrix over "
            "the batch's sentences towards the full embedding's (held fixed): the full size teaches the "
            "short ones. 0: off. A training setting: a continued run uses its own value, not its "
            "checkpoint's."
        },
    )
    prompts: list[str] | None = field(
        default=None,
        metadata={
            "help": "Named prompts (text prefixes) saved with the model, as name=text items, e.g. --prompts "
            "'query=query: ' 'document=passage: ' (a run file: prompts: {query: 'query: ', ...}). A task names its "
            "texts' prompt with `prompt:` in its entry; encode(prompt_name=...) and run_embed.py --prompt_name use "
            "them."
        },
    )
    default_prompt_name: str | None = field(
        default=None,
        metadata={
            "help": "The prompt every text takes unless its task or the caller names another (training, evaluation "
            "and encode). Without it, texts take no prompt unless one is named. A continued sentmtl checkpoint keeps "
            "its own: another is refused."
        },
    )
    lora_r: int | None = field(
        default=None,
        metadata={
            "help": "Train LoRA adapters of this rank (e.g. 8 or 16) inside the encoder instead of the encoder itself: "
            "its weights stay frozen, the projection and heads train fully, and the adapters take the "
            f"backbone LRs of their layers. Unset: no adapters. Needs {PEFT_INSTALL}."
        },
    )
    lora_alpha: float | None = field(
        default=None,
        metadata={"help": "LoRA's scale numerator: the update B·A is scaled by alpha / r. Default: 2 × --lora_r."},
    )
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the adapters' input (training only)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "The encoder's linear layers to adapt, by name or name suffix. Default: "
            f"{' '.join(DEFAULT_TARGET_MODULES)}, every attention and feed-forward projection of BERT-, RoBERTa- and "
            "MPNet-style encoders (another architecture is refused, with its layers' names to set here)."
        },
    )
    merge_lora: bool = field(
        default=False,
        metadata={
            "help": "Save the final model with the adapters folded into the encoder: a plain sentmtl model, loadable "
            "without peft. Default: an adapter folder (adapters, projection and heads; the base encoder by name)."
        },
    )
    allow_pickle_weights: bool = field(
        default=False,
        metadata={
            "help": "Also load pickle weights (pytorch_model.bin), which can run code: only for sources you trust. "
            "Covers the model, and the distillation teachers and hard-negative miners the run names."
        },
    )

    def __post_init__(self):
        self.prompts = parse_prompts(self.prompts)
        # The config owns the rules: building one checks every value before any model loads. A continued run takes
        # its Matryoshka sizes from its checkpoint, so without --matryoshka_dims the self-distillation weight is
        # checked here as a number, and against the sizes once the model is built (`loading.build_model`).
        check_self_distillation_weight(self.matryoshka_self_distillation)
        SentMtlConfig(**self.checkable_overrides())
        for name in ("classification_loss_weight", "sentiment_loss_weight", "distillation_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 0.")
        self._check_lora()

    def _check_lora(self) -> None:
        if self.lora_r is None:
            given = [
                f"--{name}"
                for name in ("lora_alpha", "lora_dropout", "lora_target_modules", "merge_lora")
                if getattr(self, name) != getattr(type(self), name, None)
            ]
            if given:
                raise ValueError(
                    f"{', '.join(given)} without --lora_r: there are no LoRA adapters to shape or merge; add "
                    "--lora_r (e.g. 8) or drop the flag."
                )
            return
        check_lora_settings(self.lora_settings())
        require_peft()  # an ImportError naming the extra, before any data or model loads

    def lora_settings(self) -> dict | None:
        """The config's `lora` for a fresh model (None: no adapters)."""
        if self.lora_r is None:
            return None
        alpha = self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r
        return {
            "r": self.lora_r,
            "alpha": alpha,
            "dropout": self.lora_dropout,
            "target_modules": self.lora_target_modules,
        }

    def checkable_overrides(self) -> dict:
        """`config_overrides` as far as they can be checked before the model is built: without --matryoshka_dims
        the sizes may be a checkpoint's, so the self-distillation weight waits for them (`loading.build_model`);
        without --prompts, --default_prompt_name may name a checkpoint's prompt, so it waits too (a continued run
        keeps the checkpoint's default, a fresh model refuses a name it does not have)."""
        overrides = self.config_overrides()
        if overrides["matryoshka_dims"] is None:
            del overrides["matryoshka_self_distillation"]
        if overrides["prompts"] is None:
            del overrides["default_prompt_name"]
        return overrides

    def config_overrides(self) -> dict:
        """The `SentMtlConfig` fields these arguments set (for a fresh model)."""
        names = (
            "pooling",
            "embedding_size",
            "projection_init",
            "normalize",
            "dropout",
            "loss_weighting",
            "matryoshka_dims",
            "matryoshka_weights",
            "matryoshka_self_distillation",
            "prompts",
            "default_prompt_name",
        )
        values = {name: getattr(self, name) for name in names}
        if values["pooling"] is None:  # the encoder's own (`SentMtlModel.from_encoder`)
            del values["pooling"]
        return {**values, "head_logit_scale": self.head_logit_scale or None}


def parse_prompts(value) -> dict | None:
    """--prompts as {name: text}: a run file's mapping as it is, flags' `name=text` items split at the first `=`."""
    if value is None or isinstance(value, dict):
        return value
    prompts = {}
    for item in value:
        name, sep, text = str(item).partition("=")
        if not sep:
            raise ValueError(f"--prompts {item!r}: give name=text, e.g. 'query=query: '.")
        if name in prompts:
            raise ValueError(f"--prompts names {name!r} twice.")
        prompts[name] = text
    return prompts
