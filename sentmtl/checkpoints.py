"""Finding the `checkpoint-<step>` folders the Trainer writes, for `--resume_from_checkpoint`."""

from pathlib import Path


def latest_checkpoint(output_dir) -> Path | None:
    """The newest *complete* `checkpoint-<step>` (trainer_state.json is written last), or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    complete = [
        path for path in output_dir.glob("checkpoint-*")
        if path.name.split("-")[-1].isdigit() and (path / "trainer_state.json").is_file()
    ]  # fmt: skip
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
