"""`SentMtlConfig`: everything needed to rebuild a multi-task sentence transformer."""

from typing import ClassVar

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .lora import check_lora_settings
from .prompts import check_prompts, prompt_token_ids
from .task_spec import TaskSpec, check_unique_names, default_tasks, first_task

POOLING_MODES = ("mean", "cls", "pooler")
PROJECTION_INITS = ("random", "identity")
LOSS_WEIGHTINGS = ("static", "uncertainty")


class SentMtlConfig(PretrainedConfig):
    r"""
    Configuration of [`SentMtlModel`]: encoder → pooling → shared projection (→ L2 normalisation) → one head per task.

    Args:
        encoder_config (`PretrainedConfig` or `dict`):
            The encoder's own configuration (any `AutoConfig`: BERT, RoBERTa, MiniLM, …). It is nested in this
            config so `SentMtlModel(config)` rebuilds the whole network without the original checkpoint.
        pooling (`str`, defaults to `"mean"`):
            How token states become one sentence vector: `mean` (attention-mask aware; right for sentence-embedding
            encoders such as all-MiniLM-L6-v2), `cls` (first token) or `pooler` (BERT's tanh pooler output, the
            seed's choice).
        embedding_size (`int`, defaults to 256):
            Output size of `shared_projection`; the seed projected BERT-base's 768 to 256.
        projection_init (`str`, defaults to `"random"`):
            How a fresh `shared_projection` starts: `random` (the encoder's initializer range, as the seed's), or
            `identity` (needs `embedding_size` equal to the encoder's hidden size): the embedding then starts as the
            encoder's own pooled vector, so training begins at the pretrained model's similarity (STS-B dev 86.7 for
            the bundled MiniLM, ~86 through a random 256-d projection) instead of first re-learning it.
        normalize (`bool`, defaults to `True`):
            L2-normalise the embeddings (the seed's `F.normalize`), so that cosine similarity is a dot product.
        dropout (`float`, defaults to 0.1):
            Dropout on the embeddings before the two heads (training only; embeddings themselves are unaffected).
        tasks (`list[dict]`, *optional*):
            The model's tasks (`sentmtl.model.task_spec.TaskSpec` as dicts: name, type, labels, loss, loss_weight,
            label_smoothing); one head per classification / multilabel / score / regression task. Unset: the seed's
            two tasks, `classification` (classes from `id2label`) and `sentiment` (a score in [0, 1]), weighted by
            the two `*_loss_weight` fields below — which is how configs saved before tasks existed load.
        head_logit_scale (`float`, *optional*):
            Each logit-producing head multiplies its output by a learnable scale initialised to this value. The
            heads read the unit-norm embedding, so without it their logits are bounded by the weight norms (~2):
            the cross-entropy never lets go of correct examples and pulls the whole embedding apart along the
            sentiment axis. Unset (configs saved before it existed): no scale.
        loss_weighting (`str`, defaults to `"static"`):
            `static`: `classification_loss_weight * L_A + sentiment_loss_weight * L_B` (1.0 / 1.0 is the seed's
            plain sum). `uncertainty`: learned homoscedastic weighting (Kendall, Gal & Cipolla, CVPR 2018),
            `sum_i exp(-s_i) * L_i + s_i / 2` with one learned `s_i = log(sigma_i^2)` per task; the static weights
            are then unused.
        classification_loss_weight / sentiment_loss_weight (`float`, default 1.0):
            Static task weights; must be non-negative.
        classification_label_smoothing (`float`, defaults to 0.0):
            Label smoothing of the Task A cross-entropy (`--label_smoothing_factor` sets it). It lives in the
            model's loss, beside Task B's, rather than in the Trainer's label smoother, which would replace the
            whole loss with Task A's alone.
        matryoshka_dims (`list[int]`, *optional*):
            Matryoshka embeddings (Kusupati et al. 2022): every loss that acts on the embedding (similarity,
            contrastive, relational distillation) becomes the weighted mean of that loss over the embedding's
            first `d` dimensions (re-normalised), for each `d` listed (each ≤ `embedding_size`; list the full size
            too, e.g. `[384, 256, 128, 64, 32]`). The heads keep reading the full embedding. A truncated embedding is
            then `encode(..., truncate_dim=d)`. A task with `matryoshka: false` keeps its loss on the full
            embedding. A loss that cannot use a prefix (cosine distillation against full-size teacher vectors) is
            refused unless its task sets `matryoshka: false`.
        matryoshka_weights (`list[float]`, *optional*):
            One weight per `matryoshka_dims` entry (default: 1 each).
        matryoshka_self_distillation (`float`, defaults to 0.0):
            With `matryoshka_dims`: the weight of a loss term that pulls each shorter prefix's cosine matrix over
            the batch's sentences (every sentence the batch embeds, whatever its task) towards the full
            embedding's, which is held fixed for it (relational distillation from the model itself). The term is
            the weighted mean over the listed sizes below `embedding_size`, with `matryoshka_weights`. Training
            only (not in the evaluation loss); a continued run sets its own value.
        prompts (`dict[str, str]`, *optional*):
            Named prefixes the model's texts take, e.g. `{"query": "query: ", "document": "passage: "}`
            (`sentmtl.model.prompts`): a task names the prompt of its texts (`prompt` in its entry), `encode` takes
            `prompt_name=`. Pooling includes the prompt's tokens on every path.
        default_prompt_name (`str`, *optional*):
            The prompt a text takes when nothing names another: a task without `prompt`, `encode` without
            `prompt_name` (sentence-transformers' `default_prompt_name`).
        prompt_token_ids (`dict[str, list[int]]`, *optional*):
            Filled when built or loaded with a tokenizer: the token ids of the prompt the first classification task's
            texts take, which the sequence-classification view inserts into a pipeline's inputs. Keyed by the prompt's
            text, not its name, so ids of a prompt whose text was changed since are never used (the view refuses).
        encoder_name_or_path (`str`, *optional*):
            Where the encoder's pretrained weights came from (informational: the weights themselves are in the
            checkpoint, except in a LoRA adapter folder, which loads them from here). Model cards and logs quote it.
        lora (`dict`, *optional*):
            LoRA adapters in the encoder (`sentmtl.model.lora`, needs peft): `r`, `alpha`, `dropout`,
            `target_modules` and `base_fingerprint` (which encoder weights they adapt). Unset: no adapters.
    """

    model_type = "sentmtl"
    sub_configs_defaults = {"encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert")}
    # For a plain `Trainer.predict`: the predictions are (logits, sentiment_scores); the dicts, aliases and
    # embeddings stay out. SentMtlTrainer evaluates every task through `task_outputs` instead.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "task_losses",
        "task_logits",
        "task_outputs",
        "classification_loss",
        "sentiment_loss",
        "sentiment_logits",
        "embeddings",
        "pair_embeddings",
    ]

    encoder_config: PretrainedConfig | dict | None = None
    encoder_name_or_path: str | None = None
    pooling: str = "mean"
    embedding_size: int = 256
    projection_init: str = "random"
    normalize: bool = True
    dropout: float = 0.1
    loss_weighting: str = "static"
    classification_loss_weight: float = 1.0
    sentiment_loss_weight: float = 1.0
    classification_label_smoothing: float = 0.0
    tasks: list | None = None
    head_logit_scale: float | None = None
    matryoshka_dims: list | None = None
    matryoshka_weights: list | None = None
    matryoshka_self_distillation: float = 0.0
    prompts: dict | None = None
    default_prompt_name: str | None = None
    prompt_token_ids: dict | None = None
    lora: dict | None = None

    def __post_init__(self, **kwargs):
        # The seed's class names, for configs of the seed's model (no `tasks`, or a classification task that sets
        # them below); a model without a classification task keeps transformers' neutral LABEL_i names.
        types = [t.type if isinstance(t, TaskSpec) else dict(t).get("type") for t in self.tasks or ()]
        has_classification = self.tasks is None or "classification" in types
        if self.id2label is None and "num_labels" not in kwargs and has_classification:
            self.id2label = {0: "negative", 1: "positive"}
            self.label2id = {"negative": 0, "positive": 1}
        super().__post_init__(**kwargs)
        if self.tasks is not None:
            specs = [
                TaskSpec.from_dict(dict(task), f"tasks[{i}]") if not isinstance(task, TaskSpec) else task
                for i, task in enumerate(self.tasks)
            ]
            check_unique_names(specs)
            self.tasks = [spec.to_dict() for spec in specs]
            first = first_task(specs, "classification")
            if first is not None:
                # `id2label` is the first classification task's: what pipeline("text-classification") and the
                # Hub widget show.
                self.id2label = first.id2label
                self.label2id = {label: i for i, label in first.id2label.items()}
        self._validate_choices()
        self._validate_prompts()

    def _validate_prompts(self):
        self.prompts = check_prompts(self.prompts, self.default_prompt_name)
        for spec in self.task_specs:
            unknown = sorted(set(spec.prompt_names.values()) - set(self.prompts or ()))
            if unknown:
                known = ", ".join(self.prompts) if self.prompts else "none"
                raise ValueError(f"task {spec.name!r} names the prompt(s) {unknown}; the model's prompts: {known}.")

    def prompt_name_for(self, spec: TaskSpec, role: str) -> str | None:
        """The name of the prompt a task's `role` texts take (`sentmtl.model.prompts.ROLES`): the task's for it (hard
        negatives are documents: without their own, they take the positives'), else the default prompt, else None."""
        names = spec.prompt_names
        if role == "negatives" and role not in names and "text_pair" in names:
            role = "text_pair"
        name = names.get(role, self.default_prompt_name)
        return name if name and self.prompts else None

    def prompt_for(self, spec: TaskSpec, role: str) -> str:
        """The prefix of a task's `role` texts (`prompt_name_for`), "" for none."""
        name = self.prompt_name_for(spec, role)
        return self.prompts[name] if name else ""

    def pipeline_prompt_name(self) -> str | None:
        """The prompt of the first classification task's texts: what the sequence-classification view (the
        text-classification pipeline) inserts into its inputs. None without one."""
        first = first_task(self.task_specs, "classification")
        if first is None:
            return None
        return first.prompt_names.get("text", self.default_prompt_name)

    def set_prompt_token_ids(self, tokenizer) -> None:
        """`prompt_token_ids` for the pipeline's prompt, from the model's tokenizer (checked to split where the text
        starts, `prompts.prompt_token_ids`), keyed by the text they were computed from."""
        name = self.pipeline_prompt_name()
        text = self.prompts[name] if name else None
        self.prompt_token_ids = {text: prompt_token_ids(tokenizer, text)} if name else None

    @property
    def task_specs(self) -> list[TaskSpec]:
        """The tasks, as `TaskSpec`s (the seed's two when `tasks` is unset)."""
        if self.tasks is None:
            return default_tasks(
                [self.id2label[i] for i in range(self.num_labels)],
                self.classification_loss_weight,
                self.sentiment_loss_weight,
                self.classification_label_smoothing,
            )
        return [TaskSpec(**task) for task in self.tasks]

    def task(self, name: str) -> TaskSpec:
        for spec in self.task_specs:
            if spec.name == name:
                return spec
        raise ValueError(f"no task {name!r}; the model's tasks are {', '.join(t.name for t in self.task_specs)}.")

    def _validate_choices(self):
        if self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling={self.pooling!r} is not supported; choose one of {', '.join(POOLING_MODES)}.")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(
                f"loss_weighting={self.loss_weighting!r} is not supported; choose one of {', '.join(LOSS_WEIGHTINGS)}."
            )
        if not isinstance(self.embedding_size, int) or self.embedding_size < 1:
            raise ValueError(f"embedding_size={self.embedding_size!r} must be a positive integer.")
        if self.projection_init not in PROJECTION_INITS:
            raise ValueError(
                f"projection_init={self.projection_init!r} is not supported; choose one of {', '.join(PROJECTION_INITS)}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1).")
        for name in ("classification_loss_weight", "sentiment_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0.")
        if not 0.0 <= self.classification_label_smoothing < 1.0:
            raise ValueError(
                f"classification_label_smoothing={self.classification_label_smoothing!r} must be in [0, 1)."
            )
        if self.num_labels < 2:
            raise ValueError(f"num_labels={self.num_labels!r} must be >= 2 (Task A is a classification).")
        if self.head_logit_scale is not None and not self.head_logit_scale > 0:
            raise ValueError(f"head_logit_scale={self.head_logit_scale!r} must be > 0 (or unset: no scale).")
        self._validate_matryoshka()
        self.lora = check_lora_settings(self.lora)
        if self.pooling == "pooler" and self.encoder_config.model_type not in _ENCODERS_WITH_POOLER:
            raise ValueError(
                f"pooling='pooler' needs an encoder with a pooler layer ({', '.join(_ENCODERS_WITH_POOLER)}); "
                f"{self.encoder_config.model_type!r} has none: use 'mean' or 'cls'."
            )

    def _validate_matryoshka(self):
        dims, weights = self.matryoshka_dims, self.matryoshka_weights
        self_distillation = check_self_distillation_weight(self.matryoshka_self_distillation)
        if dims is None:
            if weights is not None or self_distillation:
                given = "matryoshka_weights" if weights is not None else "matryoshka_self_distillation"
                raise ValueError(f"{given} without matryoshka_dims: give the dimensions it acts on.")
            return
        if (
            not isinstance(dims, (list, tuple))
            or not dims
            or len(set(dims)) != len(dims)
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= self.embedding_size for d in dims)
        ):
            raise ValueError(
                f"matryoshka_dims={dims!r}: a list of distinct integers in 1 … embedding_size ({self.embedding_size})."
            )
        if weights is not None and (
            len(weights) != len(dims) or not all(w >= 0 for w in weights) or not sum(weights) > 0
        ):
            raise ValueError(
                f"matryoshka_weights={weights!r}: one non-negative weight per dimension in "
                f"matryoshka_dims {dims}, not all 0."
            )
        refused = [
            f"{t.name} (loss {t.loss})" for t in self.task_specs if t.matryoshka and t.loss in t.kind.prefix_refused
        ]
        if refused:
            raise ValueError(
                f"matryoshka_dims: {', '.join(refused)} cannot be taken on a truncated embedding (cosine "
                "distillation compares it with full-size teacher vectors); use loss: relational, set "
                "matryoshka: false on the task (its loss on the full embedding only), or drop "
                "matryoshka_dims."
            )
        shorter = [w for d, w in self.matryoshka() if d < self.embedding_size]
        if self_distillation and not sum(shorter) > 0:
            raise ValueError(
                f"matryoshka_self_distillation={self_distillation!r} needs a size below the embedding's "
                f"({self.embedding_size}) with a weight above 0 in matryoshka_dims {dims} "
                f"(matryoshka_weights {weights}): it pulls the shorter prefixes towards the full "
                "embedding."
            )
        self.matryoshka_dims = [int(d) for d in dims]
        self.matryoshka_self_distillation = float(self_distillation)

    def matryoshka(self) -> list[tuple[int, float]]:
        """[(dimension, weight)] of the Matryoshka losses; empty when off."""
        if not self.matryoshka_dims:
            return []
        weights = self.matryoshka_weights or [1.0] * len(self.matryoshka_dims)
        return [(int(d), float(w)) for d, w in zip(self.matryoshka_dims, weights)]

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's token states, the input of `shared_projection`."""
        return self.encoder_config.hidden_size


def check_self_distillation_weight(value) -> float:
    """`matryoshka_self_distillation` as a float, or a ValueError: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"matryoshka_self_distillation={value!r} must be a finite number >= 0.")
    return float(value)


# Encoders whose `AutoModel` has a `pooler` (dense + tanh over the first token), as BERT has.
# (ELECTRA has none.) The model checks the loaded encoder itself too: this list only fails known cases early.
_ENCODERS_WITH_POOLER = ("bert", "roberta", "xlm-roberta", "camembert", "ernie", "mpnet")


__all__ = ["SentMtlConfig", "POOLING_MODES", "PROJECTION_INITS", "LOSS_WEIGHTINGS"]
