"""The main job behind `run_mtl.py`: arguments (`parse`), the run's tasks, model and data, training, evaluation, and
what the run leaves (`results`). It orchestrates; each step has its owner."""

import logging
import sys
from dataclasses import replace
from pathlib import Path

from transformers import set_seed

from ..data.plan import tasks_from_flags
from ..data.run_data import build_run_data, pad_multiple
from ..model.prompts import check_prompt_room
from ..serving.embed import default_max_length
from ..serving.hub import HubPushError
from ..serving.loading import build_model
from ..utils.errors import USER_ERRORS, debug_requested, one_line
from .callbacks import FreezeCallback, InterruptCallback, ReleaseMemoryCallback, WeightAveragingCallback
from .checkpoints import resolve_resume_checkpoint
from .parse import ARGUMENT_CLASSES, parse_args  # noqa: F401 (imported from here by callers and benchmarks)
from .results import RunResult, finish_run
from .run_checks import check_activation_checkpointing, check_export, check_lora, check_streaming
from .stopping import RunInterrupted, train_to_the_end
from .trainer import NonFiniteLossError, SentMtlTrainer

logger = logging.getLogger("sentmtl")


def run(model_args, data_args, training_args, callbacks=()) -> "RunResult":
    """Train (unless nothing is trainable), evaluate, and leave the model, card and reports in `output_dir`."""
    # The Trainer would create the Hub repository before training and pickle the token into every checkpoint's
    # training_args.bin; sentmtl pushes once, after the local save, and keeps the token out of every file.
    push_to_hub, hub_token = training_args.push_to_hub, training_args.hub_token
    training_args.push_to_hub, training_args.hub_token = False, None
    output_dir = Path(training_args.output_dir)
    resume_from = resolve_resume_checkpoint(training_args.resume_from_checkpoint, output_dir)
    if training_args.resume_from_checkpoint == "auto":
        logger.warning("Resuming from %s", resume_from or f"scratch: no complete checkpoint in {output_dir}")

    set_seed(training_args.seed)  # before the heads are initialised, so the same seed gives the same run
    tasks = data_args.tasks if data_args.tasks is not None else tasks_from_flags(model_args, data_args, training_args)
    streaming = check_streaming(tasks, data_args, training_args)
    check_lora(model_args, training_args)
    model, tokenizer = build_model(model_args, [task.spec for task in tasks])
    # The model's own specs: a continued task that names no prompt keeps its saved one (`keep_saved_prompt`).
    tasks = [replace(task, spec=model.config.task(task.spec.name)) for task in tasks]
    check_activation_checkpointing(model, training_args)
    if training_args.export_onnx:
        check_export(model, tokenizer)
    # The encoder's position limit too: tokenizers often report a huge `model_max_length` sentinel.
    max_length = min(data_args.max_length, default_max_length(tokenizer, model))
    check_prompt_room(model.config.prompts, tokenizer, max_length)
    # The multiple a batch is padded to, resolved, so that run_config.yaml replays it whatever a later default is.
    data_args.pad_to_multiple_of = pad_multiple(data_args, streaming)
    data = build_run_data(
        tasks, model, tokenizer, data_args, training_args, streaming, max_length, model_args.allow_pickle_weights
    )

    interrupt = InterruptCallback()
    averaging = [WeightAveragingCallback(training_args.ema_decay, resume_from)] if training_args.ema_decay else []
    head_learning_rates = {t.spec.name: t.head_learning_rate for t in tasks if t.head_learning_rate}
    trainer = SentMtlTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train_dataset,
        eval_dataset=data.eval_dataset,
        processing_class=tokenizer,
        data_collator=data.collator,
        callbacks=[FreezeCallback.from_args(training_args), interrupt, *averaging, ReleaseMemoryCallback(), *callbacks],
        head_learning_rates=head_learning_rates,
        eval_tasks=data.eval_tasks,
    )
    train_metrics = None
    if model.count_parameters()[0] == 0:
        logger.warning(
            "Every parameter is frozen (--freeze %s): nothing to train, evaluating only.", training_args.freeze
        )
    else:
        train_metrics = train_to_the_end(trainer, interrupt, resume_from, output_dir)
    metrics, outputs = trainer.evaluate_outputs()
    trainer.save_metrics("eval", metrics)
    hub = {"token": hub_token, "private": training_args.hub_private_repo, "revision": training_args.hub_revision}
    arguments = (model_args, data_args, training_args)
    return finish_run(
        trainer, model, tokenizer, data, arguments, metrics, outputs, train_metrics, hub if push_to_hub else None
    )


# Errors a user can act on, a diverged run and a failed push among them: one line, no traceback (sentmtl.utils.errors).
RUN_ERRORS = (*USER_ERRORS, NonFiniteLossError, HubPushError)


def main(argv=None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("sentmtl").setLevel(logging.INFO)  # the split's summary and other facts about the run
    try:
        model_args, data_args, training_args = parse_args(argv)
    except RUN_ERRORS as err:
        if debug_requested():
            raise
        print(one_line("run_mtl.py", err), file=sys.stderr)
        return 2
    try:
        run(model_args, data_args, training_args)
    except RUN_ERRORS as err:
        if debug_requested():
            raise
        print(one_line("run_mtl.py", err), file=sys.stderr)
        return 1
    except RunInterrupted as err:
        print(f"run_mtl.py: {err}", file=sys.stderr)
        return err.exit_code
    return 0
