"""The main job behind `run_mtl.py`: parse arguments (YAML + flags), train, evaluate, report, save."""

import dataclasses
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed

from .arguments import DataArguments, ModelArguments, SentMtlTrainingArguments
from .callbacks import FreezeCallback, InterruptCallback
from .checkpoints import latest_checkpoint, resolve_resume_checkpoint
from .corpus import load_sentiment_corpus, train_test_split
from .data import build_collator, load_data_files, tokenize_dataset
from .embed import default_max_length
from .errors import USER_ERRORS, debug_requested, one_line
from .hub import HubPushError, push_folder
from .loading import is_sentmtl_checkpoint, load_model_and_tokenizer
from .metrics import build_compute_metrics
from .model_card import build_model_card
from .report import format_metrics_table, plot_confusion_matrix, plot_loss_curve
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
        valid = sorted(f.name for cls in ARGUMENT_CLASSES for f in dataclasses.fields(cls) if f.init)
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"{config_file}: unknown key(s) {unknown}. Valid keys: {', '.join(valid)}.")
        # As parser defaults, YAML values lose to any flag given on the command line; argparse still converts
        # strings (PyYAML reads `1e-5` as a string) with each field's type.
        parser.set_defaults(**values)
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


def build_model(model_args: ModelArguments, class_names: list[str]):
    """A fresh model whose Task A has `class_names`, or the checkpoint to continue from (whose names must match)."""
    if is_sentmtl_checkpoint(model_args.model_name_or_path):
        logger.warning("Continuing from the sentmtl checkpoint %s (its config fixes the architecture).",
                       model_args.model_name_or_path)
        model, tokenizer = load_model_and_tokenizer(model_args.model_name_or_path, model_args.allow_pickle_weights)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if names != list(class_names):
            raise ValueError(f"{model_args.model_name_or_path} was trained with classes {names}, not --class_names "
                             f"{list(class_names)}: continue with the same names (in the same order).")
        return model, tokenizer
    id2label = dict(enumerate(class_names))
    return load_model_and_tokenizer(model_args.model_name_or_path, model_args.allow_pickle_weights,
                                    id2label=id2label, label2id={name: i for i, name in id2label.items()},
                                    **model_args.config_overrides())  # fmt: skip


class RunInterrupted(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; `exit_code` is the shell's 128 + signal."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run(model_args, data_args, training_args, callbacks=()) -> dict:
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
    splits = load_splits(data_args, training_args.seed)
    model, tokenizer = build_model(model_args, data_args.class_names)
    class_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    # The encoder's position limit too: tokenizers often report a huge `model_max_length` sentinel.
    max_length = min(data_args.max_length, default_max_length(tokenizer, model))
    with training_args.main_process_first(desc="tokenising"):
        train_dataset = tokenize_dataset(splits["train"], tokenizer, max_length)
        eval_dataset = tokenize_dataset(splits["test"], tokenizer, max_length)

    interrupt = InterruptCallback()
    trainer = SentMtlTrainer(
        model=model,
        args=training_args,
        data_collator=build_collator(tokenizer),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(class_names),
        callbacks=[FreezeCallback.from_args(training_args), interrupt, *callbacks],
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
    trainer.save_metrics("eval", metrics)
    run_config = resolved_run_config(model_args, data_args, training_args)
    card = build_model_card(model.config, metrics, run_config, train_metrics,
                            repo_id=training_args.hub_model_id if push_to_hub else None)  # fmt: skip
    save_final_model(trainer, output_dir, extra_files={"README.md": card})
    if trainer.is_world_process_zero():
        (output_dir / "run_config.yaml").write_text(run_config_yaml(run_config, training_args))
        plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
        plot_confusion_matrix(metrics, output_dir / "confusion_matrix.png", class_names)
        print(f"\nResults on {eval_dataset.num_rows} held-out sentences ({output_dir / 'eval_results.json'}):")
        print(format_metrics_table(metrics))
        print(f"Model, tokenizer, model card (README.md) and reports saved in {output_dir}")
        if push_to_hub:
            url = push_folder(output_dir, training_args.hub_model_id, token=hub_token,
                              private=training_args.hub_private_repo, revision=training_args.hub_revision)  # fmt: skip
            print(f"Pushed to {url}")
    return metrics


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
