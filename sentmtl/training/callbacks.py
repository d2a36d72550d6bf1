"""Callbacks: `FreezeCallback` decides *when* parts are frozen (the model knows *how*); `InterruptCallback` stops
cleanly; `WeightAveragingCallback` keeps an exponential moving average of the weights and ends training on it;
`ReleaseMemoryCallback` hands freed memory back to the system as training goes (`sentmtl.utils.memory` knows how)."""

import logging
import os
import signal
import threading

import torch
from transformers import TrainerCallback

from ..model.lora import has_lora, is_base_weight
from ..utils.memory import RELEASE_EVERY_STEPS, release_memory
from .processes import all_processes_agree, unwrap

logger = logging.getLogger(__name__)


class FreezeCallback(TrainerCallback):
    """Freezes before the optimizer and the DDP wrapper exist, and optionally unfreezes the backbone later.

    Args:
        freeze: `none`, `all`, `backbone`, `classification_head` or `sentiment_head`.
        freeze_backbone_layers: freeze the embeddings and the lowest K encoder layers.
        unfreeze_backbone_at_epoch: at the start of this (0-based) epoch the backbone trains again.
    """

    def __init__(self, freeze="none", freeze_backbone_layers=0, unfreeze_backbone_at_epoch=None):
        self.freeze = freeze
        self.freeze_backbone_layers = freeze_backbone_layers
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch

    @classmethod
    def from_args(cls, args) -> "FreezeCallback":
        return cls(args.freeze, args.freeze_backbone_layers, args.unfreeze_backbone_at_epoch)

    def apply(self, model) -> None:
        """The freezing asked for, applied to `model` now."""
        if self.freeze != "none":
            model.freeze(self.freeze)
        if self.freeze_backbone_layers:
            model.freeze_lower_backbone(self.freeze_backbone_layers)
        trainable, total = model.count_parameters()
        logger.warning(
            "Trainable parameters: %s of %s (%.1f%%); freeze=%s, frozen lower layers=%d",
            f"{trainable:,}",
            f"{total:,}",
            100 * trainable / total,
            self.freeze,
            self.freeze_backbone_layers,
        )

    def on_init_end(self, args, state, control, model=None, **kwargs):
        # The Trainer calls this at the end of __init__: before create_optimizer and before accelerate wraps
        # the model in DDP, so every process agrees on which parameters train.
        if has_lora(unwrap(model)) and (self.freeze == "backbone" or self.unfreeze_backbone_at_epoch is not None):
            # run_mtl.py refuses the flags (run_checks.check_lora); a trainer built by hand is refused here, since
            # the weight average and the adapter folder both take a LoRA model's encoder to stay frozen.
            what = "freeze='backbone'" if self.freeze == "backbone" else "unfreeze_backbone_at_epoch"
            raise ValueError(
                f"FreezeCallback({what}) on a model with LoRA adapters: the encoder's weights stay frozen and the "
                "adapters train; drop it, or train without adapters."
            )
        self.apply(model)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        # `>=`, not `==`: a run resumed past the epoch must unfreeze too. At the start of a fresh epoch `state.epoch`
        # is that epoch's index; in a resumed one it is where the checkpoint stopped (e.g. 1.5 in epoch 1), so the
        # epoch is its floor (the epsilon guards against 1.9999999 for 2).
        epoch = int(state.epoch + 1e-6)
        if self.unfreeze_backbone_at_epoch is not None and epoch >= self.unfreeze_backbone_at_epoch:
            if all(p.requires_grad for p in unwrap(model).encoder.parameters()):
                return
            unwrap(model).unfreeze("backbone")
            logger.warning(
                "Epoch %d: backbone unfrozen (%s trainable parameters).",
                self.unfreeze_backbone_at_epoch,
                f"{unwrap(model).count_parameters()[0]:,}",
            )


class InterruptCallback(TrainerCallback):
    """SIGINT / SIGTERM during training: finish the current step, save a checkpoint, stop.

    A signal's default action would kill the process wherever it is, possibly in the middle of writing a
    checkpoint. Here it only sets a flag; at the end of the step the Trainer saves `checkpoint-<step>` (model,
    optimizer, scheduler, RNG states) and stops, and `--resume_from_checkpoint auto` continues exactly from it.
    A second signal stops at once. Under several processes the flag is shared at every step, so all of them stop
    (and save) at the same step whichever received the signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    @property
    def interrupted(self) -> bool:
        return self.received is not None

    def _handle(self, signum, frame):
        if self.received is not None:
            self.restore()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
        self.received = signum
        logger.warning(
            "Received %s: saving a checkpoint after this step, then stopping (send it again to stop now).",
            signal.Signals(signum).name,
        )

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set from the main thread
            self._previous = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}

    def on_step_end(self, args, state, control, **kwargs):
        if not all_processes_agree(self.received is None, device=args.device):
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class WeightAveragingCallback(TrainerCallback):
    """An exponential moving average (EMA) of every floating-point weight the run can train (a LoRA run's frozen base
    encoder is left out: its adapters, projection and heads are averaged), updated after each optimizer step and
    copied into the model when training ends, so the final evaluation, the saved model and the card are the
    average's. The decay warms up as min(decay, (1 + t) / (10 + t)) so early, still-random weights fade fast.

    The average is saved beside each checkpoint (`ema_weights.pt`) and read back from the checkpoint a run
    resumes from, so a resumed run ends on the same average as an uninterrupted one. Every process updates its
    own copy from the same (DDP-synchronised) weights.
    """

    FILE = "ema_weights.pt"

    def __init__(self, decay: float, resume_from: str | None = None):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema_decay {decay} must be in (0, 1).")
        self.decay = decay
        self.resume_from = resume_from
        self.average: dict[str, torch.Tensor] | None = None

    @staticmethod
    def _weights(model) -> dict[str, torch.Tensor]:
        model = unwrap(model)
        # A LoRA run never trains its base encoder (the flags that would are refused): averaging it would keep a
        # second fp32 copy of the frozen weights in memory and in every checkpoint's ema_weights.pt (440 MB for mpnet).
        frozen = is_base_weight if has_lora(model) else (lambda name: False)
        return {name: p for name, p in model.named_parameters() if p.is_floating_point() and not frozen(name)}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if getattr(args, "load_best_model_at_end", False):
            from .arguments import EMA_WITH_BEST_MODEL

            raise ValueError(EMA_WITH_BEST_MODEL)
        weights = self._weights(model)
        saved = os.path.join(self.resume_from, self.FILE) if self.resume_from else None
        if saved and os.path.isfile(saved):
            stored = torch.load(saved, map_location="cpu", weights_only=True)
            # A LoRA checkpoint of an earlier 0.3 dev version averaged the frozen encoder too: its extra keys are
            # base weights that never changed, so the adapters', projection's and heads' averages continue.
            earlier_lora = has_lora(unwrap(model)) and all(map(is_base_weight, set(stored) - set(weights)))
            if not set(weights) <= set(stored) or (set(stored) != set(weights) and not earlier_lora):
                raise ValueError(f"{saved}: its weights do not match the model's; was it saved by another model?")
            self.average = {name: stored[name].to(p.device, torch.float32) for name, p in weights.items()}
        elif saved:
            raise ValueError(
                f"--ema_decay: {self.resume_from} has no {self.FILE} (saved without --ema_decay?), so "
                "the average cannot continue; resume without --ema_decay or start afresh."
            )
        else:
            self.average = {name: p.detach().float().clone() for name, p in weights.items()}

    @torch.no_grad()
    def on_step_end(self, args, state, control, model=None, **kwargs):
        t = state.global_step
        decay = min(self.decay, (1 + t) / (10 + t))
        for name, p in self._weights(model).items():
            self.average[name].lerp_(p.detach().float(), 1 - decay)

    def on_save(self, args, state, control, **kwargs):
        if args.should_save and self.average is not None:
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if os.path.isdir(folder):
                torch.save({name: a.cpu() for name, a in self.average.items()}, os.path.join(folder, self.FILE))

    @torch.no_grad()
    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.average is None:
            return
        for name, p in self._weights(model).items():
            p.copy_(self.average[name].to(p.dtype))
        logger.warning("Training ended on the exponential moving average of the weights (decay %g).", self.decay)


class ReleaseMemoryCallback(TrainerCallback):
    """Every `every_steps` training steps, return the memory the allocator holds freed to the system
    (`sentmtl.utils.memory.release_memory`, without the cycle collector). A long run's steps free tensors of ever-different
    sizes that the heap keeps and cannot reuse whole: a 2,000-step streamed run's peak came down from 2.19 to
    2.03 GB (benchmarks/scale.py), the step time within noise. `run_mtl.py` adds it to every run; a
    `SentMtlTrainer` built by hand gets it when it is passed in `callbacks`."""

    def __init__(self, every_steps: int = RELEASE_EVERY_STEPS):
        if every_steps < 1:
            raise ValueError(f"every_steps={every_steps}: give a positive number of steps.")
        self.every_steps = every_steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every_steps == 0:
            release_memory(collect=False)


__all__ = ["FreezeCallback", "InterruptCallback", "ReleaseMemoryCallback", "WeightAveragingCallback"]
