"""run_config.yaml: the resolved arguments of a run, written beside the model; `python run_mtl.py
output_dir/run_config.yaml` repeats the run."""

import dataclasses

import yaml

from .arguments import SentMtlTrainingArguments


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
        text = text.replace(
            line,
            line.rstrip("\n") + "  # chosen automatically: bf16 autocast is fast on this device "
            "type only where this says true\n",
            1,
        )
    return text


def _default(f: dataclasses.Field):
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(default, "value", default)


# The training fields a run is defined by, saved even at their defaults (a later default must not change a replay).
_SAVED_TRAINING_FIELDS = {
    "output_dir",
    "seed",
    "data_seed",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "backbone_learning_rate",
    "shared_learning_rate",
    "head_learning_rate",
    "loss_weighting_learning_rate",
    "layerwise_lr_decay",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "warmup_steps",
    "lr_scheduler_type",
    "optim",
    "max_grad_norm",
    "label_smoothing_factor",
    "freeze",
    "freeze_backbone_layers",
    "unfreeze_backbone_at_epoch",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "eval_strategy",
    "eval_steps",
    "save_strategy",
    "save_steps",
    "logging_steps",
    "train_sampling_strategy",
    "torch_compile",
}
# Derived from other arguments by TrainingArguments itself, per machine, or secret.
_NEVER_SAVED = {
    "hub_token",
    "logging_dir",
    "accelerator_config",
    "report_to",
    "debug",
    "do_eval",
    "dataloader_pin_memory",
    "activation_checkpointing",
    "local_rank",
}
