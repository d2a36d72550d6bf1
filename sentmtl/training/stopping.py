"""Training that ends one of three ways: done (its metrics), stopped by SIGINT / SIGTERM after a checkpoint
(`RunInterrupted`, the shell's exit code), or stopped before a non-finite update (`NonFiniteLossError`, naming the
last good checkpoint). Either way nothing is written over a previous model."""

import signal

from ..utils.memory import release_memory
from .checkpoints import latest_checkpoint
from .trainer import NonFiniteLossError


class RunInterrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; `exit_code` is the shell's 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def train_to_the_end(trainer, interrupt, resume_from, output_dir) -> dict:
    """`trainer.train`, then the run's train metrics; the optimizer's moments (twice the trainable weights) and the
    gradients are freed before the final evaluation, saving and plots, which would otherwise stack on top of them."""
    try:
        result = trainer.train(resume_from_checkpoint=resume_from)
    except NonFiniteLossError as err:
        last = latest_checkpoint(output_dir)
        kept = f"The last good checkpoint is {last}." if last else "No checkpoint was saved (--save_strategy no)."
        raise NonFiniteLossError(f"{err} {kept} Nothing was written over it.") from None
    finally:
        interrupt.restore()  # on_train_end is not called when training raises
    if interrupt.interrupted and trainer.state.global_step < trainer.state.max_steps:
        raise RunInterrupted(
            f"{signal.Signals(interrupt.received).name}: stopped at step {trainer.state.global_step} of "
            f"{trainer.state.max_steps}; checkpoint saved in {latest_checkpoint(output_dir)}. Continue with the same "
            "command and --resume_from_checkpoint auto.",
            128 + interrupt.received,
        )
    trainable, total = trainer.model.count_parameters()
    metrics = {**result.metrics, "global_step": result.global_step}
    metrics.update(trainable_parameters=trainable, total_parameters=total)
    trainer.save_metrics("train", metrics)
    trainer.accelerator.free_memory()
    trainer.optimizer = trainer.lr_scheduler = None
    trainer.model.zero_grad(set_to_none=True)
    release_memory()
    return metrics
