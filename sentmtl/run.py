"""The main job behind `run_mtl.py`: parse arguments (YAML + flags), train, evaluate, report, save."""

import dataclasses
import logging
from dataclasses import dataclass, field
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import yaml
from transformers import HfArgumentParser, set_seed

from .arguments import DataArguments, ModelArguments, SentMtlTrainingArguments
from .callbacks import FreezeCallback, InterruptCallback, WeightAveragingCallback
from .checkpoints import latest_checkpoint, resolve_resume_checkpoint
from .corpus import load_sentiment_corpus, train_test_split
from .data import load_data_files
from .embed import default_max_length, encode
from .errors import USER_ERRORS, debug_requested, one_line
from .hub import HubPushError, push_folder
from .loading import is_sentmtl_checkpoint, load_model_and_tokenizer
from .task_data import (
    DataSpec,
    MultiSourceDataset,
    MultiTaskCollator,
    RunTask,
    add_teacher_targets,
    build_sources,
    tokenize_source,
)
from .tasks import TaskSpec, default_tasks
from .model_card import build_model_card
from .metrics import reliability_bins, reliability_points
from .report import format_metrics_table, plot_confusion_matrix, plot_loss_curve, plot_reliability
from .trainer import EvalSource, NonFiniteLossError, SentMtlTrainer

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
            data_args.set_tasks(tasks, model_args, where=str(config_file))
        return model_args, data_args, training_args
    return parser.parse_args_into_dataclasses(args=argv)


def load_splits(data_args: DataArguments, seed: int):
    """`DatasetDict(train, test)` from the UCI corpus or the user's files."""
    if data_args.train_file:
        files = load_data_files(
            data_args.train_file, data_args.validation_file, data_args.text_column, data_args.label_column,
            data_args.score_column, data_args.class_names,
        )  # fmt: skip
        if "test" in files:
            return files
        return train_test_split(files["train"], data_args.split_test_size, seed, data_args.max_samples)
    corpus = load_sentiment_corpus(
        data_args.data_dir, data_args.sources, on_bad_lines="skip" if data_args.skip_bad_lines else "error"
    )
    return train_test_split(corpus, data_args.split_test_size, seed, data_args.max_samples)


def refuse_architecture_flags(model_args: ModelArguments, config) -> None:
    """A checkpoint's config.json fixes its architecture: a flag set away from its default that the checkpoint does
    not share (`--embedding_size 384` on a 256-d model, `--projection_init identity`, …) would be ignored, so it is
    an error."""
    defaults = ModelArguments(model_name_or_path=model_args.model_name_or_path).config_overrides()
    for name, value in model_args.config_overrides().items():
        if value != defaults[name] and value != getattr(config, name, None):
            raise ValueError(
                f"--{name} {value} cannot apply to {model_args.model_name_or_path}: a trained sentmtl checkpoint keeps "
                f"the architecture in its config.json ({name}={getattr(config, name, None)!r}). Drop the flag, or "
                "start from a plain encoder."
            )


def build_model(model_args: ModelArguments, tasks: list[TaskSpec]):
    """A fresh model with `tasks`, or the checkpoint to continue from: its headed tasks must be the run's (same
    type and labels); tasks without a head (similarity, distillation) may be added."""
    if is_sentmtl_checkpoint(model_args.model_name_or_path):
        logger.warning("Continuing from the sentmtl checkpoint %s (its config fixes the architecture).",
                       model_args.model_name_or_path)
        model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, model_args.allow_pickle_weights)
        refuse_architecture_flags(model_args, model.config)
        known = {task.name: task for task in model.config.task_specs}
        for task in tasks:
            mine = known.get(task.name)
            if task.has_head and (mine is None or (mine.type, mine.labels) != (task.type, task.labels)):
                has = f"{mine.type} with classes {mine.labels}" if mine else "no such task"
                raise ValueError(f"{model_args.model_name_or_path} has {has} for {task.name!r}, not a {task.type} "
                                 f"task with classes {task.labels}: continue with the same tasks and names.")  # fmt: skip
        # The checkpoint's tasks in its order (their heads are in the weights; a learned loss weight is per position)
        # with the run's losses and weights, then the run's new head-less tasks.
        wanted = {task.name: task for task in tasks}
        merged = [wanted.get(name, mine).to_dict() for name, mine in known.items()]
        merged += [task.to_dict() for task in tasks if task.name not in known]
        if model.loss_log_variances is not None and len(merged) != len(known):
            raise ValueError(f"{model_args.model_name_or_path} learns one loss weight per task for {len(known)} tasks; "
                             f"this run has {len(merged)}. Continue with the same tasks, or --distillation_weight 0.")  # fmt: skip
        model.config.tasks = merged
        return model, tokenizer
    return load_model_and_tokenizer(model_args.model_name_or_path, model_args.allow_pickle_weights,
                                    tasks=[task.to_dict() for task in tasks], **model_args.config_overrides())  # fmt: skip


def run_tasks(model_args: ModelArguments, data_args: DataArguments) -> list[RunTask]:
    """The run file's `tasks:`, or the seed's run from the flags: Task A and Task B (and distillation) on one data."""
    if data_args.tasks is not None:
        return data_args.tasks
    specs = default_tasks(data_args.class_names, model_args.classification_loss_weight,
                          model_args.sentiment_loss_weight, distillation_weight=model_args.distillation_weight)  # fmt: skip
    return [RunTask(spec, DataSpec("uci")) for spec in specs]


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


class RunInterrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; `exit_code` is the shell's 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


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
    tasks = run_tasks(model_args, data_args)
    default_splits = load_splits(data_args, training_args.seed) if data_args.tasks is None else None
    sources = build_sources(tasks, data_args, training_args.seed, default_splits)
    model, tokenizer = build_model(model_args, [task.spec for task in tasks])
    # The encoder's position limit too: tokenizers often report a huge `model_max_length` sentinel.
    max_length = min(data_args.max_length, default_max_length(tokenizer, model))
    if any(task.type == "distillation" for source in sources for task in source.tasks):
        # The teacher is the encoder as it starts this run, pooled before the (untrained) projection; computed once.
        add_teacher_targets(sources, lambda sentences: encode(model, sentences, tokenizer, max_length=max_length,
                                                              pooled=True, show_progress_bar=True))  # fmt: skip
    with training_args.main_process_first(desc="tokenising"):
        train_dataset = MultiSourceDataset([tokenize_source(source.train, tokenizer, max_length) for source in sources])
        eval_sources = [EvalSource(tokenize_source(source.eval, tokenizer, max_length), source.tasks)
                        for source in sources if source.eval is not None]  # fmt: skip
    for source in sources:
        logger.info("Data: %s feeds %s: %d training rows, %d held out.", source.description,
                    ", ".join(t.name for t in source.tasks), source.train.num_rows,
                    source.eval.num_rows if source.eval is not None else 0)  # fmt: skip
    training_args.task_head_learning_rates = {t.spec.name: t.data.head_learning_rate for t in tasks
                                              if t.data.head_learning_rate}  # fmt: skip

    interrupt = InterruptCallback()
    averaging = [WeightAveragingCallback(training_args.ema_decay, resume_from)] if training_args.ema_decay else []
    trainer = SentMtlTrainer(
        model=model,
        args=training_args,
        data_collator=MultiTaskCollator(tokenizer, model.tasks),
        train_dataset=train_dataset,
        eval_dataset=eval_sources[0].dataset if eval_sources else None,  # evaluate() reads eval_sources
        eval_sources=eval_sources,
        processing_class=tokenizer,
        callbacks=[FreezeCallback.from_args(training_args), interrupt, *averaging, *callbacks],
    )
    trainable, total = model.count_parameters()
    train_metrics = None
    if trainable == 0:
        logger.warning("Every parameter is frozen (--freeze %s): nothing to train, evaluating only.", training_args.freeze)
    else:
        try:
            train_result = trainer.train(resume_from_checkpoint=resume_from)
        except NonFiniteLossError as err:
            last = latest_checkpoint(output_dir)
            kept = f"The last good checkpoint is {last}." if last else "No checkpoint was saved (--save_strategy no)."
            raise NonFiniteLossError(f"{err} {kept} Nothing was written over it.") from None
        finally:
            interrupt.restore()  # on_train_end is not called when training raises
        if interrupt.interrupted and trainer.state.global_step < trainer.state.max_steps:
            signal_name = signal.Signals(interrupt.received).name
            raise RunInterrupted(
                f"{signal_name}: stopped at step {trainer.state.global_step} of {trainer.state.max_steps}; checkpoint "
                f"saved in {latest_checkpoint(output_dir)}. Continue with the same command and "
                "--resume_from_checkpoint auto.",
                128 + interrupt.received,
            )
        train_metrics = {**train_result.metrics, "global_step": train_result.global_step,
                         "trainable_parameters": trainable, "total_parameters": total}  # fmt: skip
        trainer.save_metrics("train", train_metrics)
    metrics = trainer.evaluate()
    if data_args.sts_eval_file:
        metrics.update(stsb_metrics(model, tokenizer, data_args.sts_eval_file))
    trainer.save_metrics("eval", metrics)
    run_config = resolved_run_config(model_args, data_args, training_args)
    if data_args.tasks is not None:
        run_config["tasks"] = [task.to_dict() for task in data_args.tasks]
    card = build_model_card(model.config, metrics, run_config, train_metrics,
                            repo_id=training_args.hub_model_id if push_to_hub else None)  # fmt: skip
    save_final_model(trainer, output_dir, extra_files={"README.md": card})
    points = {task.name: reliability_points(task, *trainer.last_eval_outputs[task.name]) for task in model.tasks
              if task.name in trainer.last_eval_outputs}  # fmt: skip
    points = {name: value for name, value in points.items() if value is not None}
    if trainer.is_world_process_zero():
        (output_dir / "run_config.yaml").write_text(run_config_yaml(run_config, training_args))
        plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
        for task in model.tasks:
            if task.type == "classification":
                plot_confusion_matrix(metrics, output_dir / f"confusion_{task.name}.png", task)
            if task.name in points:
                plot_reliability(*points[task.name], output_dir / f"reliability_{task.name}.png", task)
        held_out = ", ".join(f"{s.dataset.num_rows} for {'/'.join(t.name for t in s.tasks)}" for s in eval_sources)
        print(f"\nResults on the held-out rows ({held_out}; {output_dir / 'eval_results.json'}):")
        print(format_metrics_table(metrics, model.tasks))
        print(f"Model, tokenizer, model card (README.md) and reports saved in {output_dir}")
        if push_to_hub:
            url = push_folder(output_dir, training_args.hub_model_id, token=hub_token,
                              private=training_args.hub_private_repo, revision=training_args.hub_revision)  # fmt: skip
            print(f"Pushed to {url}")
    files = sorted(p.name for p in output_dir.iterdir() if p.is_file()) if output_dir.is_dir() else []
    reliability = {name: reliability_bins(*value) for name, value in points.items()}
    return RunResult(metrics, train_metrics, trainer.state.log_history, output_dir, files, reliability)


def stsb_metrics(model, tokenizer, path, pooled: bool = False) -> dict[str, float]:
    """The embedding's general similarity: Spearman × 100 of the pair cosines against STS-B's gold scores
    (`pooled`: of the encoder's pooled vectors, before the projection — the untouched encoder's own score)."""
    from scipy.stats import spearmanr

    from .stsb import read_stsb

    pairs = read_stsb(path)
    a = encode(model, list(pairs["sentence1"]), tokenizer, pooled=pooled)
    b = encode(model, list(pairs["sentence2"]), tokenizer, pooled=pooled)
    cosines = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(1e-12)
    return {"eval_stsb_spearman": float(100 * spearmanr(cosines, pairs["score"]).statistic)}


def save_final_model(trainer, output_dir: Path, extra_files: dict[str, str]) -> None:
    """Model, tokenizer, code files and `extra_files`, written to a staging folder and then moved into place.

    Each file lands with an atomic rename and config.json lands last, so an interrupted save never leaves a
    folder that looks like a loadable model but holds half-written weights.
    """
    staging = output_dir / ".staging-final-model"
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))  # every process takes part (sharded models); the main one writes
    if not trainer.is_world_process_zero():
        return
    for name, text in extra_files.items():
        (staging / name).write_text(text)
    for name in sorted((p.name for p in staging.iterdir()), key=lambda name: (name == "config.json", name)):
        target = output_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()


def resolved_run_config(*argument_objects) -> dict:
    """The resolved arguments: written as run_config.yaml, `python run_mtl.py output_dir/run_config.yaml` repeats the
    run. Every model and data argument; of the ~120 training arguments, the ones that define a run and every one
    set to other than its default, less those derived from others or secret."""
    resolved = {}
    for arguments in argument_objects:
        values = arguments.to_dict() if isinstance(arguments, SentMtlTrainingArguments) else None
        for f in dataclasses.fields(arguments):
            if not f.init:
                continue
            value = getattr(arguments, f.name)
            value = value.value if hasattr(value, "value") else value
            if values is not None:
                value = values[f.name]
                if f.name in _NEVER_SAVED or (f.name not in _SAVED_TRAINING_FIELDS and value == _default(f)):
                    continue
                if f.name == "use_cpu" and arguments.use_cpu_chosen_automatically:
                    continue
            resolved[f.name] = value
    return resolved


def run_config_yaml(run_config: dict, training_args) -> str:
    """run_config.yaml's text; an automatic bf16 choice is recorded as made, with a comment saying so."""
    text = yaml.safe_dump(run_config, sort_keys=False)
    if training_args.bf16_chosen_automatically:
        line = f"bf16: {str(training_args.bf16).lower()}\n"
        text = text.replace(line, line.rstrip("\n") + "  # chosen automatically: bf16 autocast is fast on this device "
                            "type only where this says true\n", 1)  # fmt: skip
    return text


def _default(f: dataclasses.Field):
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(default, "value", default)


# The training fields a run is defined by, saved even at their defaults (a later default must not change a replay).
_SAVED_TRAINING_FIELDS = {
    "output_dir", "seed", "data_seed", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "per_device_eval_batch_size", "gradient_accumulation_steps", "learning_rate", "backbone_learning_rate",
    "shared_learning_rate", "head_learning_rate", "loss_weighting_learning_rate", "layerwise_lr_decay",
    "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "warmup_steps", "lr_scheduler_type", "optim",
    "max_grad_norm", "label_smoothing_factor", "freeze", "freeze_backbone_layers", "unfreeze_backbone_at_epoch",
    "bf16", "fp16", "gradient_checkpointing", "eval_strategy", "eval_steps", "save_strategy", "save_steps",
    "logging_steps", "train_sampling_strategy", "torch_compile",
}  # fmt: skip
# Derived from other arguments by TrainingArguments itself, per machine, or secret.
_NEVER_SAVED = {
    "hub_token", "logging_dir", "accelerator_config", "report_to", "debug", "do_eval", "dataloader_pin_memory",
    "activation_checkpointing", "local_rank",
}  # fmt: skip


# Errors a user can act on, a diverged run and a failed push among them: one line, no traceback (sentmtl.errors).
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
