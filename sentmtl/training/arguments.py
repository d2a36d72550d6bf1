"""Command-line arguments: `ModelArguments`, `DataArguments`, `SentMtlTrainingArguments`."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy

from ..data.corpus import LABEL_NAMES, SOURCES
from ..data.sampler import STRATEGIES
from ..model.configuration_sentmtl import (
    LOSS_WEIGHTINGS,
    POOLING_MODES,
    PROJECTION_INITS,
    SentMtlConfig,
    check_self_distillation_weight,
)
from ..serving.precision import fast_bf16_available, has_accelerator
from .checkpoints import latest_checkpoint

DEFAULT_TEST_SIZE = 0.2


def launched_processes() -> int:
    """How many processes this run was launched with (`accelerate launch` / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


FREEZE_CHOICES = ("none", "all", "backbone", "<task>_head")
# Training ends on the average of the weights; the best checkpoint holds raw weights measured at another point. Either
# would silently replace the other, so the two are not combined.
EMA_WITH_BEST_MODEL = (
    "--ema_decay with --load_best_model_at_end: the run would end on the weight average and "
    "replace the best checkpoint (or the reverse), silently. Use one of them."
)


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "A pretrained encoder (Hub name or folder) to build a fresh multi-task model around, or a sentmtl "
            "checkpoint to continue from. Default: the bundled all-MiniLM-L6-v2."
        },
    )
    pooling: str = field(default="mean", metadata={"help": f"Token pooling: {', '.join(POOLING_MODES)}."})
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
    allow_pickle_weights: bool = field(
        default=False,
        metadata={
            "help": "Also load pickle weights (pytorch_model.bin), which can run code: only for sources you trust."
        },
    )

    def __post_init__(self):
        # The config owns the rules: building one checks every value before any model loads. A continued run takes
        # its Matryoshka sizes from its checkpoint, so without --matryoshka_dims the self-distillation weight is
        # checked here as a number, and against the sizes once the model is built (`loading.build_model`).
        check_self_distillation_weight(self.matryoshka_self_distillation)
        SentMtlConfig(**self.checkable_overrides())
        for name in ("classification_loss_weight", "sentiment_loss_weight", "distillation_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 0.")

    def checkable_overrides(self) -> dict:
        """`config_overrides` as far as they can be checked before the model is built: without --matryoshka_dims
        the sizes may be a checkpoint's, so the self-distillation weight waits for them (`loading.build_model`)."""
        overrides = self.config_overrides()
        if overrides["matryoshka_dims"] is None:
            del overrides["matryoshka_self_distillation"]
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
        )
        return {**{name: getattr(self, name) for name in names}, "head_logit_scale": self.head_logit_scale or None}


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={"help": "The UCI corpus: its unzipped folder or the zip. Default: download the official zip."},
    )
    sources: list[str] | None = field(
        default=None, metadata={"help": f"Corpus sources to use: any of {', '.join(SOURCES)}. Default: all three."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Your own training data (.csv, .tsv, .json, .jsonl, .parquet) instead of the corpus."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Your own evaluation data; with --train_file alone, a split of it is used."}
    )
    text_column: str = field(default="sentence", metadata={"help": "Text column of --train_file / --validation_file."})
    label_column: str = field(default="label", metadata={"help": "Label column (ids, or names from --class_names)."})
    score_column: str = field(
        default="score", metadata={"help": "Task B score column in [0, 1]; derived from the label if absent."}
    )
    class_names: list[str] = field(
        default_factory=lambda: list(LABEL_NAMES),
        metadata={
            "help": "Task A class names in id order (two or more); string labels in your files are mapped through "
            "them, and the model's id2label, metrics, plots and card use them. The corpus takes two (a renaming)."
        },
    )
    test_size: float | None = field(
        default=None,
        metadata={
            "help": f"Held-out share for evaluation when the data is split (default {DEFAULT_TEST_SIZE}, the "
            "seed's 80/20); not with --validation_file."
        },
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Use a stratified subset of this many sentences (the seed's Task 4 used 1,000)."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Truncate sentences to this many tokens (the corpus's longest is ~100)."}
    )
    skip_bad_lines: bool = field(
        default=False,
        metadata={"help": "Skip unreadable corpus lines (with a report) instead of stopping at the first."},
    )
    sts_eval_file: str | None = field(
        default=None,
        metadata={
            "help": "Also measure the trained embedding on these STS-B pairs (e.g. sts-dev.csv): Spearman × 100 "
            "of the pair cosines, eval_stsb_spearman. make run passes ../shared's when it is there."
        },
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate each source on at most this many of its held-out rows (a seeded random subset; "
            "--sts_eval_file's pairs too): bounds the final evaluation's time and memory on large data. "
            "The results table says how many rows each task's metrics used."
        },
    )
    stream_buffer_size: int = field(
        default=10_000,
        metadata={
            "help": "A streamed source's shuffle buffer (rows; data: {..., streaming: true}): its training rows "
            "pass through a buffer of this many, drawn at random (seeded). Larger: closer to a full "
            "shuffle, more memory."
        },
    )
    teacher_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where distillation targets (teacher vectors) are cached, keyed by the teacher and the "
            "texts, so a second run on the same data reads them instead of embedding every row. "
            "Default: <datasets cache>/sentmtl_teacher_vectors. Delete the folder to clear it."
        },
    )
    # The run file's `tasks:` (RunTask objects, `sentmtl.data.plan`), set by parse_args; not a command-line flag.
    tasks: list | None = field(default=None, init=False)

    def __post_init__(self):
        unknown = [source for source in self.sources or () if source not in SOURCES]
        if unknown:
            raise ValueError(f"--sources {unknown} not known; choose from {', '.join(SOURCES)}.")
        if self.test_size is not None and not 0.0 < self.test_size < 1.0:
            raise ValueError(f"--test_size {self.test_size} must be between 0 and 1 (exclusive).")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"--class_names {self.class_names}: give two or more distinct names, in id order.")
        # Flags that only mean something for the corpus or for a split would otherwise be silently ignored.
        if self.train_file:
            corpus_only = [f"--{name}" for name in ("sources", "data_dir") if getattr(self, name) is not None]
            corpus_only += ["--skip_bad_lines"] if self.skip_bad_lines else []
            if corpus_only:
                raise ValueError(
                    f"{', '.join(corpus_only)} select(s) and read(s) the UCI corpus; with --train_file "
                    "the corpus is not used. Drop them, or drop --train_file."
                )
        elif len(self.class_names) != 2:
            raise ValueError(
                f"--class_names {self.class_names}: the UCI corpus has two classes (negative, "
                "positive); more classes need your own --train_file."
            )
        if self.validation_file and self.test_size is not None:
            raise ValueError(
                "--test_size sets the held-out share of a split; with --validation_file there is no "
                "split. Drop one of them."
            )
        if self.stream_buffer_size < 1:
            raise ValueError(f"--stream_buffer_size {self.stream_buffer_size} must be at least 1.")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise ValueError(f"--max_eval_samples {self.max_eval_samples} must be at least 1.")
        if self.max_samples is not None and self.max_samples < 2:
            raise ValueError(f"--max_samples {self.max_samples} must be at least 2.")
        if self.validation_file and not self.train_file:
            raise ValueError("--validation_file needs --train_file as well.")
        if self.validation_file and self.max_samples is not None:
            # It would otherwise be ignored: with both files given there is no split to take a subset from.
            raise ValueError(
                "--max_samples subsets the data before the train/test split; with --validation_file "
                "there is no split, so trim your files instead."
            )

    @property
    def split_test_size(self) -> float:
        return DEFAULT_TEST_SIZE if self.test_size is None else self.test_size


@dataclass
class SentMtlTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the seed's layer-wise learning rates and freezing, and defaults for this task."""

    output_dir: str | None = field(default="output/sentmtl", metadata={"help": "Where the model and reports go."})
    num_train_epochs: float = field(
        default=5.0,
        metadata={
            "help": "Epochs. 5 measured best on the seed's protocol (benchmarks/reproduce_seed.py); the seed trained 3."
        },
    )
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch size per device."})
    learning_rate: float = field(
        default=5e-5, metadata={"help": "The base LR, used by the backbone unless --backbone_learning_rate is set."}
    )
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (torch's default, as the seed used)."}
    )
    warmup_steps: float = field(
        default=0.1, metadata={"help": "LR warmup: a step count, or a ratio of the training steps when below 1."}
    )
    eval_strategy: IntervalStrategy | str = field(
        default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."}
    )
    save_strategy: SaveStrategy | str = field(
        default="no", metadata={"help": "When to save checkpoints: no, steps, epoch or best."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log the training loss every this many steps."})
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bfloat16 autocast. Default: on where it is measured faster on this machine (on a CPU with "
            "AVX-512 BF16 / AMX, a short probe at first use, cached; SENTMTL_CPU_BF16=1/0 skips it), off elsewhere, "
            "GPUs included (launch-bound there: see README Performance). Weights and the optimizer stay fp32."
        },
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Training batches: group_by_length (default; random mega-batches, each sorted by length, so "
            "little padding), random, or sequential."
        },
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue an interrupted run: a checkpoint folder, or `auto` for the newest complete checkpoint "
            "in --output_dir (a fresh start when there is none)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a trained model already in --output_dir (otherwise that is an error)."},
    )
    export_onnx: bool = field(
        default=False,
        metadata={
            "help": "After the final save, also write <output_dir>/onnx/: the whole model (every head included) as "
            "one ONNX graph, fp32 and two int8 variants (run_embed.py --backend onnx); pushed with --push_to_hub; "
            "without it, a previous run's onnx/ there is removed. "
            'Needs pip install "sentmtl[onnx]".'
        },
    )
    task_sampling: str = field(
        default="proportional",
        metadata={
            "help": f"Which source the next batch comes from when tasks have their own data: "
            f"{', '.join(STRATEGIES)} (see sentmtl/data/sampler.py)."
        },
    )
    task_sampling_temperature: float = field(
        default=2.0, metadata={"help": "T of --task_sampling temperature: a source is drawn ∝ size^(1/T)."}
    )
    hub_strategy: HubStrategy | str = field(
        default="end",
        metadata={"help": "sentmtl pushes once, after the final local save (--push_to_hub): only `end` is supported."},
    )

    # Defaults: layer-wise, measured on the bundled MiniLM (92.5% Task A on the seed's 3,000-sentence protocol);
    # the freshly initialised projection and heads learn 4x faster than the pretrained encoder.
    backbone_learning_rate: float | None = field(
        default=None, metadata={"help": "LR of the encoder (the seed's layer-wise run: 1e-5). Unset: --learning_rate."}
    )
    shared_learning_rate: float | None = field(
        default=2e-4,
        metadata={"help": "LR of the shared projection (the seed: 2e-5). null in a YAML config: --learning_rate."},
    )
    head_learning_rate: float | None = field(
        default=2e-4,
        metadata={"help": "LR of both task heads (the seed: 2e-5). null in a YAML config: --learning_rate."},
    )
    loss_weighting_learning_rate: float = field(
        default=1e-2,
        metadata={
            "help": "LR of the learned task weights of --loss_weighting uncertainty (their log-variances). They are "
            "two scalars that must move by ~1 over a run: at the heads' 2e-4 they would stay put."
        },
    )
    layerwise_lr_decay: float = field(
        default=1.0,
        metadata={
            "help": "LLRD: encoder layer k of L trains at backbone LR × decay^(L-k), embeddings lowest. 1.0 = off."
        },
    )
    freeze: str = field(
        default="none",
        metadata={"help": f"What to freeze: {', '.join(FREEZE_CHOICES)} (a task's head, e.g. classification_head)."},
    )
    freeze_backbone: bool = field(default=False, metadata={"help": "Shorthand for --freeze backbone."})
    freeze_backbone_layers: int = field(
        default=0, metadata={"help": "Freeze the embeddings and the lowest K encoder layers; train the rest."}
    )
    unfreeze_backbone_at_epoch: int | None = field(
        default=None,
        metadata={"help": "Gradual unfreezing: a frozen backbone starts training at this epoch (0-based)."},
    )
    ema_decay: float | None = field(
        default=None,
        metadata={
            "help": "Train on, then evaluate and save, an exponential moving average of the weights with this "
            "decay (e.g. 0.99: about the last 100 steps). Unset: the last weights."
        },
    )

    def __post_init__(self):
        if self.freeze_backbone:
            if self.freeze not in ("none", "backbone"):
                raise ValueError(f"--freeze_backbone conflicts with --freeze {self.freeze}.")
            self.freeze = "backbone"
        if self.freeze not in FREEZE_CHOICES[:3] and not self.freeze.endswith("_head"):
            raise ValueError(f"--freeze {self.freeze!r} is not supported; choose one of {', '.join(FREEZE_CHOICES)}.")
        if self.task_sampling not in STRATEGIES:
            raise ValueError(
                f"--task_sampling {self.task_sampling!r} is not supported; choose one of {', '.join(STRATEGIES)}."
            )
        if not self.task_sampling_temperature > 0:
            raise ValueError(f"--task_sampling_temperature {self.task_sampling_temperature} must be > 0.")
        for name in ("backbone_learning_rate", "shared_learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name} {value} must be > 0.")
        if self.learning_rate <= 0:
            raise ValueError(f"--learning_rate {self.learning_rate} must be > 0.")
        if not 0.0 < self.layerwise_lr_decay <= 1.0:
            raise ValueError(f"--layerwise_lr_decay {self.layerwise_lr_decay} must be in (0, 1].")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"--ema_decay {self.ema_decay} must be in (0, 1).")
        if self.ema_decay is not None and self.load_best_model_at_end:
            raise ValueError(EMA_WITH_BEST_MODEL)
        if self.freeze_backbone_layers < 0:
            raise ValueError(f"--freeze_backbone_layers {self.freeze_backbone_layers} must be >= 0.")
        if (
            self.unfreeze_backbone_at_epoch is not None
            and self.freeze != "backbone"
            and not self.freeze_backbone_layers
        ):
            raise ValueError(
                "--unfreeze_backbone_at_epoch needs a frozen backbone (--freeze_backbone or --freeze_backbone_layers)."
            )
        if self.loss_weighting_learning_rate <= 0:
            raise ValueError(f"--loss_weighting_learning_rate {self.loss_weighting_learning_rate} must be > 0.")
        if self.unfreeze_backbone_at_epoch is not None and launched_processes() > 1:
            # DDP registers its gradient hooks for the parameters that train when it wraps the model; parameters
            # unfrozen later are never all-reduced, and the replicas drift apart without an error.
            raise ValueError(
                "--unfreeze_backbone_at_epoch is single-process only: under several processes the "
                "unfrozen backbone would not be synchronised. Run it in one process."
            )
        hub_strategy = getattr(self.hub_strategy, "value", self.hub_strategy)
        if hub_strategy != "end":
            raise ValueError(
                f"--hub_strategy {hub_strategy} is not supported: sentmtl pushes once, after the final "
                "local save (`end`). Push checkpoints yourself with python -m sentmtl.serving.hub if needed."
            )
        # Chosen for the device the run trains on (the CPU under --use_cpu, even on a machine with a GPU).
        self.bf16_chosen_automatically = self.bf16 is None
        if self.bf16 is None:
            device_type = (
                "cpu" if self.use_cpu or not has_accelerator() else ("cuda" if torch.cuda.is_available() else "mps")
            )
            self.bf16 = not self.fp16 and fast_bf16_available(device_type)
        if self.export_onnx:  # refused now, not after hours of training
            from ..serving.onnx_export import require_onnx

            require_onnx()
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id user/name (the repository to create or update).")
        self._check_output_dir()
        self.use_cpu_chosen_automatically = False
        if self.bf16 and not self.use_cpu and not has_accelerator():
            # transformers refuses bf16 without a GPU unless told to use the CPU; bf16 asked for on a machine
            # without one means the CPU, so say it for the user.
            self.use_cpu = True
            self.use_cpu_chosen_automatically = True
        super().__post_init__()

    def _check_output_dir(self) -> None:
        """Refuse to overwrite a trained model unless asked (transformers 5 dropped its own overwrite_output_dir).

        Resuming is no exception when there is nothing to resume: `auto` with no checkpoint trains from scratch.
        """
        output_dir = Path(self.output_dir or "")
        resuming = self.resume_from_checkpoint not in (None, "auto") or (
            self.resume_from_checkpoint == "auto" and latest_checkpoint(output_dir) is not None
        )
        if (output_dir / "config.json").is_file() and not self.overwrite_output_dir and not resuming:
            raise ValueError(
                f"--output_dir {output_dir} already holds a trained model (config.json). Pass --overwrite_output_dir "
                "to replace it, or choose another --output_dir."
            )

    def learning_rates(self) -> dict[str, float]:
        """The layer-wise LRs, unset ones falling back to `learning_rate` (the seed's uniform run), and the LR of the
        learned loss weights."""
        return {
            "backbone": self.backbone_learning_rate or self.learning_rate,
            "shared": self.shared_learning_rate or self.learning_rate,
            "head": self.head_learning_rate or self.learning_rate,
            "loss_weighting": self.loss_weighting_learning_rate,
        }
