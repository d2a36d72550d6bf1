"""The main job behind `run_mtl.py`: parse arguments (YAML + flags), train, evaluate, report, save."""

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed

from ..data.plan import tasks_from_file, tasks_from_flags
from ..data.run_data import build_run_data
from ..model.configuration_sentmtl import SentMtlConfig
from ..serving.embed import default_max_length
from ..serving.hub import HubPushError, push_folder
from ..serving.loading import build_model
from ..serving.onnx_export import ONNX_FOLDER, export_onnx
from ..utils.errors import USER_ERRORS, debug_requested, one_line
from .arguments import DataArguments, ModelArguments, SentMtlTrainingArguments
from .callbacks import FreezeCallback, InterruptCallback, ReleaseMemoryCallback, WeightAveragingCallback
from .checkpoints import resolve_resume_checkpoint, save_final_model
from .model_card import build_model_card
from .report import format_metrics_table, write_reports
from .run_checks import check_export, check_streaming
from .run_config import resolved_run_config, run_config_yaml
from .stopping import RunInterrupted, train_to_the_end
from .trainer import NonFiniteLossError, SentMtlTrainer

logger = logging.getLogger("sentmtl")
ARGUMENT_CLASSES = (ModelArguments, DataArguments, SentMtlTrainingArguments)


def parse_args(argv: list[str] | None = None):
    """`[config.yaml] [--flag value ...]`: the YAML gives the run, flags override it; unknown keys are errors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    if argv and argv[0].endswith((".yaml", ".yml")):
        config_file = Path(argv.pop(0))
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file}: no such config file.")
        values = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{config_file}: expected a mapping of argument names to values.")
        tasks = values.pop("tasks", None)
        valid = sorted(f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.init)
        unknown = sorted(set(values) - set(valid) - {"tasks"})
        if unknown:
            raise ValueError(f"{config_file}: unknown key(s) {unknown}. Valid keys: {', '.join(valid)}.")
        # As parser defaults, YAML values lose to any flag given on the command line; argparse still converts
        # strings (PyYAML reads `1e-5` as a string) with each field's type.
        parser.set_defaults(**values)
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
        if tasks is not None:
            data_args.tasks = tasks_from_file(tasks, model_args, data_args, training_args, where=str(config_file))
            # The model's rules over its tasks (Matryoshka against a loss that needs the full size, …) before any data
            # or model loads.
            SentMtlConfig(**model_args.checkable_overrides(), tasks=[task.spec.to_dict() for task in data_args.tasks])
        return model_args, data_args, training_args
    return parser.parse_args_into_dataclasses(args=argv)


@dataclass
class RunResult:
    """What a run measured and left: `run()`'s return value, so callers need not re-read the files."""

    metrics: dict
    train_metrics: dict | None
    log_history: list
    output_dir: Path
    files: list[str] = field(default_factory=list)
    # {task: reliability_bins(...)} of the final evaluation, for tasks with a reliability diagram.
    reliability: dict = field(default_factory=dict)

    def __getitem__(self, key):  # `run(...)["eval_classification_accuracy"]` reads a metric, as the dict it replaces
        return self.metrics[key]


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
    model, tokenizer = build_model(model_args, [task.spec for task in tasks])
    if training_args.export_onnx:
        check_export(model, tokenizer)
    # The encoder's position limit too: tokenizers often report a huge `model_max_length` sentinel.
    max_length = min(data_args.max_length, default_max_length(tokenizer, model))
    data = build_run_data(tasks, model, tokenizer, data_args, training_args, streaming, max_length)

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
    run_config = resolved_run_config(model_args, data_args, training_args)
    if data_args.tasks is not None:
        run_config["tasks"] = [task.to_dict() for task in data_args.tasks]
    repo_id = training_args.hub_model_id if push_to_hub else None
    card = build_model_card(model.config, metrics, run_config, train_metrics, repo_id=repo_id)
    save_final_model(trainer, output_dir, extra_files={"README.md": card})
    main_process = trainer.is_world_process_zero()
    if main_process:
        if training_args.export_onnx:
            export_onnx(model, tokenizer, output_dir / ONNX_FOLDER)
        (output_dir / "run_config.yaml").write_text(run_config_yaml(run_config, training_args))
    reliability = write_reports(output_dir, trainer.state.log_history, model.tasks, outputs, draw=main_process)
    if main_process:
        held_out = ", ".join(f"{s.eval.num_rows} for {'/'.join(t.name for t in s.tasks)}" for s in data.evaluated)
        print(f"\nResults on the held-out rows ({held_out}; {output_dir / 'eval_results.json'}):")
        print(format_metrics_table(metrics, [*model.tasks, *data.eval_tasks]))
        print(f"Model, tokenizer, model card (README.md) and reports saved in {output_dir}")
        if push_to_hub:
            hub = {"private": training_args.hub_private_repo, "revision": training_args.hub_revision}
            print(f"Pushed to {push_folder(output_dir, training_args.hub_model_id, token=hub_token, **hub)}")
    files = sorted(p.name for p in output_dir.iterdir() if p.is_file()) if output_dir.is_dir() else []
    return RunResult(metrics, train_metrics, trainer.state.log_history, output_dir, files, reliability)


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
