"""The main job behind `run_mtl.py`: parse arguments (YAML + flags), train, evaluate, report, save."""

import dataclasses
import logging
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser, set_seed

from .arguments import DataArguments, ModelArguments, SentMtlTrainingArguments
from .callbacks import FreezeCallback
from .corpus import load_sentiment_corpus, train_test_split
from .data import build_collator, load_data_files, tokenize_dataset
from .embed import is_sentmtl_checkpoint, load_model_and_tokenizer
from .metrics import compute_metrics
from .report import format_metrics_table, plot_confusion_matrix, plot_loss_curve
from .trainer import SentMtlTrainer

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
        return train_test_split(files["train"], data_args.test_size, seed, data_args.max_samples)
    corpus = load_sentiment_corpus(
        data_args.data_dir, data_args.sources, on_bad_lines="skip" if data_args.skip_bad_lines else "error"
    )
    return train_test_split(corpus, data_args.test_size, seed, data_args.max_samples)


def build_model(model_args: ModelArguments):
    if model_args.model_name_or_path and is_sentmtl_checkpoint(model_args.model_name_or_path):
        logger.warning("Continuing from the sentmtl checkpoint %s (its config fixes the architecture).",
                       model_args.model_name_or_path)
        return load_model_and_tokenizer(model_args.model_name_or_path)
    return load_model_and_tokenizer(model_args.model_name_or_path, **model_args.config_overrides())


def run(model_args, data_args, training_args) -> dict:
    """Train (unless nothing is trainable), evaluate, and leave the model and reports in `output_dir`."""
    set_seed(training_args.seed)  # before the heads are initialised, so the same seed gives the same run
    splits = load_splits(data_args, training_args.seed)
    model, tokenizer = build_model(model_args)
    max_length = min(data_args.max_length, tokenizer.model_max_length)
    with training_args.main_process_first(desc="tokenising"):
        train_dataset = tokenize_dataset(splits["train"], tokenizer, max_length)
        eval_dataset = tokenize_dataset(splits["test"], tokenizer, max_length)

    trainer = SentMtlTrainer(
        model=model,
        args=training_args,
        data_collator=build_collator(tokenizer),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
        callbacks=[FreezeCallback.from_args(training_args)],
    )
    output_dir = Path(training_args.output_dir)
    trainable, total = model.count_parameters()
    if trainable == 0:
        logger.warning("Every parameter is frozen (--freeze %s): nothing to train, evaluating only.", training_args.freeze)
    else:
        train_result = trainer.train()
        trainer.save_metrics("train", {**train_result.metrics, "global_step": train_result.global_step,
                                       "trainable_parameters": trainable, "total_parameters": total})
    metrics = trainer.evaluate()
    trainer.save_metrics("eval", metrics)
    trainer.save_model()  # model (safetensors), config, tokenizer; main process only
    if trainer.is_world_process_zero():
        save_run_config(output_dir, model_args, data_args, training_args)
        plot_loss_curve(trainer.state.log_history, output_dir / "loss_curve.png")
        plot_confusion_matrix(metrics, output_dir / "confusion_matrix.png")
        print(f"\nResults on {eval_dataset.num_rows} held-out sentences ({output_dir / 'eval_results.json'}):")
        print(format_metrics_table(metrics))
    return metrics


def save_run_config(output_dir: Path, *argument_objects) -> None:
    """The resolved arguments as YAML: `python run_mtl.py output_dir/run_config.yaml` repeats the run."""
    resolved = {}
    for arguments in argument_objects:
        for f in dataclasses.fields(arguments):
            if not f.init or (isinstance(arguments, SentMtlTrainingArguments) and f.name not in _SAVED_TRAINING_FIELDS):
                continue
            value = getattr(arguments, f.name)
            resolved[f.name] = value.value if hasattr(value, "value") else value
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "run_config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))


# The training fields a run is defined by (the full TrainingArguments has ~120, mostly infrastructure).
_SAVED_TRAINING_FIELDS = {
    "output_dir", "seed", "num_train_epochs", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "gradient_accumulation_steps", "learning_rate", "backbone_learning_rate", "shared_learning_rate",
    "head_learning_rate", "layerwise_lr_decay", "weight_decay", "warmup_steps", "lr_scheduler_type", "optim",
    "max_grad_norm", "freeze", "freeze_backbone_layers", "unfreeze_backbone_at_epoch", "bf16", "fp16",
    "eval_strategy", "save_strategy", "logging_steps", "train_sampling_strategy", "torch_compile",
}  # fmt: skip


def main(argv=None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
        model_args, data_args, training_args = parse_args(argv)
    except (ValueError, FileNotFoundError) as err:
        print(f"run_mtl.py: error: {err}", file=sys.stderr)
        return 2
    run(model_args, data_args, training_args)
    return 0
