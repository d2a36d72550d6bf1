"""A run's arguments from `[run.yaml] [--flag value ...]`: the YAML gives the run, flags override it, unknown keys are
errors, and a run file's `tasks:` list becomes the run's tasks (`sentmtl.data.plan`) before any data or model loads."""

import dataclasses
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from ..data.plan import tasks_from_file
from ..model.configuration_sentmtl import SentMtlConfig
from .arguments import DataArguments, ModelArguments, SentMtlTrainingArguments

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


__all__ = ["ARGUMENT_CLASSES", "parse_args"]
