"""What a run refuses before it loads data or trains: a stream beside what it cannot honour, LoRA beside freezing the
encoder it adapts, an ONNX export the end of the run would refuse. (The flags' own checks live with the flags, in
`arguments.py`; a task list's in `data/plan`.)"""

from ..data.plan import RunTask
from ..serving.onnx_export import output_names, single_sentence_types
from .arguments import DataArguments


def check_streaming(tasks: list[RunTask], data_args, training_args) -> bool:
    """Whether the run trains on a stream (a task's `data: {..., streaming: true}`), refusing what a stream cannot
    honour: other training sources beside it (batches are drawn across sources by row index, which a stream has
    not), a run without --max_steps (a stream's length is not known), several processes, loader workers, and an
    order other than the stream's shuffle buffer."""
    streamed = [task for task in tasks if task.data.streamed]
    if not streamed:
        if data_args.stream_buffer_size != DataArguments.stream_buffer_size:
            raise ValueError(
                f"--stream_buffer_size {data_args.stream_buffer_size}: no task's data is streamed "
                "(data: {..., streaming: true}), so it would be ignored. Drop it."
            )
        return False
    where = f"task {streamed[0].spec.name!r} streams its data"
    if len({task.source_key() for task in tasks}) > 1:
        raise ValueError(
            f"{where}: a streamed source must be the run's only training source (every task on the same "
            "data); sampling across sources picks rows by index, which a stream has not."
        )
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise ValueError(f"{where}: a stream has no known length, so epochs cannot be counted; give --max_steps.")
    if training_args.world_size > 1:
        raise ValueError(
            f"{where}: streamed training runs in one process ({training_args.world_size} were started); "
            "run it without torchrun / accelerate launch, or give the data as a file."
        )
    if training_args.dataloader_num_workers:
        raise ValueError(
            f"{where}: --dataloader_num_workers {training_args.dataloader_num_workers}: a stream is "
            "read (and its teacher vectors computed) in the training process; drop it."
        )
    ignored = [
        flag
        for flag, given in (
            ("--data_seed", training_args.data_seed is not None),
            ("--unfreeze_backbone_at_epoch", training_args.unfreeze_backbone_at_epoch is not None),
        )
        if given
    ]
    if ignored:
        raise ValueError(
            f"{where}: {', '.join(ignored)}: a stream is ordered by --seed and has no epochs to count "
            "(a pass over it may outlast the run); drop it."
        )
    if training_args.train_sampling_strategy != "group_by_length":
        raise ValueError(
            f"{where}: --train_sampling_strategy {training_args.train_sampling_strategy}: a stream's "
            "order is its seeded shuffle buffer (--stream_buffer_size); drop the flag."
        )
    return True


def check_export(model, tokenizer) -> None:
    """`--export_onnx`: what the export at the end would refuse (clashing task names, tokenizers with non-zero
    single-sentence token types), refused before training."""
    single_sentence_types(tokenizer)
    output_names(model)


def check_lora(model_args, training_args) -> None:
    """LoRA adapters train inside a frozen encoder: freezing the backbone would freeze the adapters too (nothing of
    the encoder would train) and unfreezing it later would train the whole encoder beside them: both are refused.
    (`--freeze_backbone_layers K` freezes the adapters of the lowest K layers; `--ema_decay` averages the adapters,
    projection and heads, not the frozen encoder.) A trainer built by hand is refused the same by `FreezeCallback`."""
    if model_args.lora_r is None:
        return
    refused = [
        (flag, why)
        for flag, given, why in (
            ("--freeze_backbone", training_args.freeze == "backbone", "it would freeze the adapters as well"),
            (
                "--unfreeze_backbone_at_epoch",
                training_args.unfreeze_backbone_at_epoch is not None,
                "it would train the whole encoder beside its adapters",
            ),
        )
        if given
    ]
    if refused:
        flag, why = refused[0]
        raise ValueError(
            f"{flag} with --lora_r {model_args.lora_r}: LoRA keeps the encoder's weights frozen and trains its "
            f"adapters, and {why}. Drop {flag} (LoRA alone trains adapters, projection and heads), or drop --lora_r."
        )


def check_activation_checkpointing(model, training_args) -> None:
    """`--activation_checkpointing` (or its older name): refused before the data is prepared when the encoder cannot
    checkpoint its layers (the Trainer would refuse it only when training starts)."""
    if getattr(training_args, "activation_checkpointing", False) or training_args.gradient_checkpointing:
        model.check_activation_checkpointing()
