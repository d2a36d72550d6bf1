"""Checkpoints on disk: finding the `checkpoint-<step>` folders the Trainer writes (for `--resume_from_checkpoint`),
where a streamed run's checkpoint stopped, whether a checkpoint's LoRA adapters are this run's, and the final model's
atomic save."""

import json
import os
import shutil
from pathlib import Path

from transformers import TrainerState
from transformers.trainer import TRAINER_STATE_NAME

from ..model.lora import ADAPTER_FOLDER, is_base_weight
from ..model.model_folder import remove_stale_export


def latest_checkpoint(output_dir) -> Path | None:
    """The newest *complete* `checkpoint-<step>` (trainer_state.json is written last), or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    complete = [
        path
        for path in output_dir.glob("checkpoint-*")
        if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file()
    ]
    return max(complete, key=lambda path: int(path.name.split("-")[-1]), default=None)


def resolve_resume_checkpoint(value: str | None, output_dir) -> str | None:
    """`--resume_from_checkpoint`: a folder (checked), `auto` (the newest complete one, if any) or None."""
    if value is None:
        return None
    if value == "auto":
        found = latest_checkpoint(output_dir)
        return None if found is None else str(found)
    if not (Path(value) / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value}: not a complete checkpoint (no trainer_state.json); give a "
            "checkpoint-<step> folder, or auto for the newest one in --output_dir."
        )
    return value


def stream_position(checkpoint: str, gradient_accumulation_steps: int = 1) -> tuple[int, int]:
    """Where a streamed run's checkpoint stopped: (its pass over the stream, from 0; the batches trained in that pass).
    The Trainer counts a stream's passes as its epochs, each `max_steps` × accumulation batches long for want of a
    length, and saves `epoch` = pass + batches / that (with the `max_steps` of the run that saved it): both come back
    exactly."""
    state = TrainerState.load_from_json(os.path.join(checkpoint, TRAINER_STATE_NAME))
    per_pass = max(1, state.max_steps * gradient_accumulation_steps)
    return divmod(round((state.epoch or 0) * per_pass), per_pass)


def check_resumed_adapters(checkpoint, model) -> None:
    """Resuming: the checkpoint's LoRA adapters (its config.json's `lora`) must be the ones this run builds, over the
    same base encoder; another rank would not load, and other targets, alpha or base would load into a different
    model, silently."""
    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        return
    saved, mine = json.loads(config_file.read_text()).get("lora"), model.config.lora
    describe = lambda s: (  # noqa: E731
        "no LoRA adapters"
        if s is None
        else f"LoRA r={s['r']}, alpha={s['alpha']:g}, dropout={s['dropout']:g} on {' '.join(s['target_modules'])} "
        f"over the encoder with fingerprint {s['base_fingerprint']}"
    )
    if saved != mine:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint}: it was saved with {describe(saved)}; this run builds "
            f"{describe(mine)}. Resume with the flags it was saved with (--lora_r, --lora_alpha, --lora_dropout, "
            "--lora_target_modules, --model_name_or_path), or start afresh."
        )


def check_adapter_load(load_result) -> None:
    """After a LoRA model loaded a checkpoint's model.safetensors (strict=False): only the frozen encoder's weights,
    which come from the base encoder, may be missing; an adapter or head left at its fresh value would be silent."""
    missing = [key for key in load_result.missing_keys if not is_base_weight(key)]
    if missing or load_result.unexpected_keys:
        raise ValueError(
            f"the checkpoint does not fit this LoRA model: missing {missing[:5]}, unexpected "
            f"{load_result.unexpected_keys[:5]}."
        )


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
    if not (staging / ADAPTER_FOLDER).exists() and (output_dir / ADAPTER_FOLDER).is_dir():
        shutil.rmtree(output_dir / ADAPTER_FOLDER)  # a previous adapter folder's: not beside these weights
    for name in sorted((p.name for p in staging.iterdir()), key=lambda name: (name == "config.json", name)):
        target = output_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
    staging.rmdir()
    remove_stale_export(output_dir)  # an onnx/ beside the replaced weights was made from them
