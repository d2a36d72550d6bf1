"""Command-line arguments: `SentMtlTrainingArguments` (the Trainer's, with layer-wise LRs, freezing, the task sampling
and this task's defaults) and their checks. `ModelArguments` (`model_arguments.py`) and `DataArguments`
(`data_arguments.py`) are importable from here too: run_mtl.py parses the three together."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments
from transformers.trainer_utils import HubStrategy, IntervalStrategy, SaveStrategy

from ..data.sampler import STRATEGIES
from ..serving.precision import fast_bf16_available, has_accelerator
from .checkpoints import latest_checkpoint
from .compiling import check_compile
from .data_arguments import DEFAULT_TEST_SIZE, DataArguments
from .model_arguments import ModelArguments


def launched_processes() -> int:
    """How many processes this run was launched with (`accelerate launch` / torchrun set WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


FREEZE_CHOICES = ("none", "all", "backbone", "<task>_head")
# Training ends on the average of the weights; the best checkpoint holds raw weights measured at another point. Either
# would silently replace the other, so the two are not combined.
# Unpadded training would flatten every input the collator builds (pairs, hard negatives, prompted rows) and pool
# each by its sequence boundaries in the training forward; none of it can be checked without a GPU with flash-attn,
# so the flag is refused rather than half-working. `encode` has the path (`sentmtl.serving.unpadded`).
UNPADDED_TRAINING = (
    "--unpadded is not supported for training yet (flattened batches need the training forward and collator "
    "rewritten, and a GPU with flash-attn to check them); encode(..., unpadded=True) and run_embed.py --unpadded "
    "have it."
)
EMA_WITH_BEST_MODEL = (
    "--ema_decay with --load_best_model_at_end: the run would end on the weight average and "
    "replace the best checkpoint (or the reverse), silently. Use one of them."
)


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
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "The Trainer's filter of NaN / inf step losses out of the logged average. Off: a sentmtl run stops "
            "at a non-finite loss before any update with it (NonFiniteLossError), so the filter never has one to "
            "drop, and its test costs four ops and two host reads every step (a GPU waits on each read)."
        },
    )
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

    unpadded: bool = field(
        default=False,
        metadata={
            "help": "Not supported for training yet (refused): batches without padding, run by flash attention's "
            "variable-length kernels. Embedding has it: run_embed.py --unpadded."
        },
    )

    def __post_init__(self):
        if self.unpadded:
            raise ValueError(UNPADDED_TRAINING)
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
        check_compile(self)
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


__all__ = [
    "DEFAULT_TEST_SIZE",
    "EMA_WITH_BEST_MODEL",
    "FREEZE_CHOICES",
    "DataArguments",
    "ModelArguments",
    "SentMtlTrainingArguments",
    "UNPADDED_TRAINING",
    "launched_processes",
]
