"""LoRA adapters (through `peft`, the optional `sentmtl[peft]` extra) inside the encoder's linear layers.

A model whose config has `lora` gets low-rank adapters in the encoder (Hu et al. 2021: `W x + B A x · alpha / r`); the
encoder's own weights are frozen, while `shared_projection` and the heads train fully. Saved, such a model is an
*adapter folder*: config.json, the weights that are not the encoder's (adapters, projection, heads) in
model.safetensors, and the adapter alone in peft's format (adapter/adapter_config.json, adapter_model.safetensors).
Loading
one reads the base encoder named by `encoder_name_or_path` and refuses an encoder whose weights differ from those the
adapters were trained on (`base_fingerprint`). `merge_lora` folds the adapters into the encoder: a plain sentmtl model.

Copied beside saved weights with modeling_sentmtl.py: peft is imported inside try blocks only, so a model without
adapters loads through `trust_remote_code` where peft is not installed (transformers refuses remote code whose
top-level imports are missing).
"""

import copy
import hashlib
import os
import shutil

import torch
from torch import nn

PEFT_INSTALL = 'pip install "sentmtl[peft]"'
# The attention and feed-forward projections of BERT / RoBERTa (query, key, value; attention.output.dense,
# intermediate.dense, output.dense) and MPNet (attention.attn.q, k, v, o; intermediate.dense, output.dense). A name
# matches a module whose name is it or ends in ".<name>", as in peft. Another architecture names its own.
DEFAULT_TARGET_MODULES = ("query", "key", "value", "q", "k", "v", "o", "dense")
SETTINGS = ("r", "alpha", "dropout", "target_modules", "base_fingerprint")
# Keyword arguments of `from_pretrained` that say where a folder's files come from (a Hub id's cache, revision, …).
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")
# peft's files go in a subfolder: at the top, transformers' AutoModel would take the folder for a bare peft adapter
# and, for a Hub id, load the base encoder named in adapter_config.json instead of the sentmtl model.
ADAPTER_FOLDER = "adapter"


def _peft():
    """peft's functions, or an ImportError that says how to install it."""
    try:
        import peft
        from peft import LoraConfig
        from peft.functional import get_peft_model_state_dict, inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError as err:
        raise ImportError(
            f"LoRA adapters need peft, which is not installed: {PEFT_INSTALL} (or pip install 'peft>=0.13')."
        ) from err
    major, minor = (int(part) for part in peft.__version__.split(".")[:2])
    if (major, minor) < (0, 13):
        raise ImportError(f"LoRA adapters need peft >= 0.13; {peft.__version__} is installed: {PEFT_INSTALL}.")
    return LoraConfig, inject_adapter_in_model, get_peft_model_state_dict, BaseTunerLayer


def require_peft() -> None:
    """An ImportError naming the extra to install when peft is missing (checked before any model loads)."""
    _peft()


def check_lora_settings(settings: dict | None) -> dict | None:
    """The config's `lora` dict, checked: r a positive integer, alpha > 0, dropout in [0, 1), target_modules a
    non-empty list of names or None (the defaults)."""
    if settings is None:
        return None
    if not isinstance(settings, dict) or set(settings) - set(SETTINGS) or "r" not in settings:
        raise ValueError(f"lora={settings!r}: a dict with r and any of {', '.join(SETTINGS[1:])}.")
    r, alpha = settings["r"], settings.get("alpha", 2 * settings["r"])
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"--lora_r {r!r} must be a positive integer (the adapters' rank, e.g. 8 or 16).")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"--lora_alpha {alpha!r} must be a number > 0 (the update is scaled by alpha / r).")
    dropout = settings.get("dropout", 0.0)
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"--lora_dropout {dropout!r} must be in [0, 1).")
    targets = settings.get("target_modules")
    if targets is not None and (
        isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets)
    ):
        raise ValueError(f"--lora_target_modules {targets!r}: one or more module names, e.g. query key value dense.")
    return {**settings, "alpha": alpha, "dropout": float(dropout), "target_modules": targets and list(targets)}


def weights_fingerprint(encoder: nn.Module, skip: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) of an encoder's weights, names and shapes: which base encoder adapters belong to."""
    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        if name.startswith(skip):
            continue
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def resolve_targets(model, requested: list[str] | None) -> list[str]:
    """The target names that match linear layers of `model.encoder`. Named ones must each match one; the defaults
    must cover every linear layer of the encoder's transformer layers (else the error names the flag to set)."""
    linear = [name for name, module in model.encoder.named_modules() if isinstance(module, nn.Linear)]
    names = requested or list(DEFAULT_TARGET_MODULES)
    matches = {t: {n for n in linear if n == t or n.endswith(f".{t}")} for t in names}
    kind = model.config.encoder_config.model_type
    leaves = lambda found: " ".join(sorted({n.rsplit(".", 1)[-1] for n in found}))  # noqa: E731
    if requested:
        unmatched = [t for t in names if not matches[t]]
        if unmatched:
            raise ValueError(
                f"--lora_target_modules {' '.join(unmatched)}: no linear layer of this {kind} encoder is named so; "
                f"its linear layers end in: {leaves(linear)}."
            )
        return names
    in_layers = {f"{prefix}.{n}" for prefix, n in _layer_linear_names(model)}
    covered = set().union(*matches.values())
    if not in_layers or in_layers - covered:
        raise ValueError(
            f"the default --lora_target_modules ({' '.join(DEFAULT_TARGET_MODULES)}) cover BERT-, RoBERTa- and "
            f"MPNet-style encoders, not all the linear layers of this {kind} encoder "
            f"({leaves(in_layers - covered) or 'its layers were not found'}): set --lora_target_modules, e.g. "
            f"--lora_target_modules {leaves(in_layers) or leaves(linear)}."
        )
    return [t for t in names if matches[t]]


def _layer_linear_names(model) -> list[tuple[str, str]]:
    """(layer path, linear module name within it) for every linear layer of the encoder's transformer layers."""
    layers = {id(layer): k for k, layer in enumerate(model.encoder_layer_modules())}
    found = []
    for path, module in model.encoder.named_modules():
        if id(module) in layers:
            found += [(path, n) for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return found


def add_lora(model) -> None:
    """Inject the adapters of `model.config.lora` into `model.encoder` (its own weights frozen). A fresh model records
    its base encoder's fingerprint and the target names that matched, so the config rebuilds the same adapters."""
    LoraConfig, inject_adapter_in_model, _, _ = _peft()
    settings = model.config.lora
    if "base_fingerprint" not in settings:
        settings["base_fingerprint"] = weights_fingerprint(model.encoder)
        name = model.config.encoder_name_or_path
        if name and os.path.isdir(name):  # an adapter folder loads its base encoder from here, read from anywhere
            model.config.encoder_name_or_path = os.path.abspath(name)
    settings["target_modules"] = resolve_targets(model, settings.get("target_modules"))
    config = LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=settings["target_modules"],
        bias="none",
        base_model_name_or_path=model.config.encoder_name_or_path,
    )
    inject_adapter_in_model(config, model.encoder)


def has_lora(model) -> bool:
    return getattr(getattr(model, "config", None), "lora", None) is not None


def is_base_weight(key: str) -> bool:
    """A state-dict key of the frozen encoder (not saved in an adapter folder: it comes from the base encoder)."""
    return key.startswith("encoder.") and "lora_" not in key


def adapter_state_dict(model, state_dict: dict | None = None) -> dict:
    """What an adapter folder's model.safetensors holds: every weight but the frozen encoder's."""
    state = state_dict if state_dict is not None else model.state_dict()
    return {key: value for key, value in state.items() if not is_base_weight(key)}


def save_kwargs(model, kwargs: dict) -> dict:
    """`save_pretrained`'s keyword arguments: a LoRA model saves every weight but the frozen encoder's."""
    if has_lora(model):
        kwargs = {**kwargs, "state_dict": adapter_state_dict(model, kwargs.get("state_dict"))}
    return kwargs


def after_save(model, folder) -> None:
    """After `save_pretrained`: a LoRA model's adapter in peft's format; any other model's folder loses the adapter/
    of an earlier save."""
    if has_lora(model):
        save_peft_files(model, folder)
    else:
        remove_stale_adapter(folder)


def save_peft_files(model, folder) -> None:
    """The adapter alone in peft's format, in `folder/adapter/`: `PeftModel.from_pretrained(base encoder,
    "folder/adapter")` reads it without sentmtl."""
    from safetensors.torch import save_file

    _, _, get_peft_model_state_dict, _ = _peft()
    target = os.path.join(folder, ADAPTER_FOLDER)
    os.makedirs(target, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model.encoder).items()}
    save_file(weights, os.path.join(target, "adapter_model.safetensors"), metadata={"format": "pt"})
    model.encoder.peft_config["default"].save_pretrained(target)


def remove_stale_adapter(folder) -> None:
    """Remove `folder/adapter/` left by an earlier save of an adapter folder: a plain model saved over it has none."""
    stale = os.path.join(folder, ADAPTER_FOLDER)
    if os.path.isfile(os.path.join(stale, "adapter_config.json")):
        shutil.rmtree(stale)


def merge_lora(model) -> None:
    """Fold the adapters into the encoder's weights (W + B A · alpha / r), in place: `model` becomes a plain sentmtl
    model (no `lora` in its config) that gives the same outputs."""
    if not has_lora(model):
        return
    *_, BaseTunerLayer = _peft()
    for name, module in list(model.encoder.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)  # safe_merge: refuse weights that became NaN instead of saving them
            parent, _, child = name.rpartition(".")
            setattr(model.encoder.get_submodule(parent), child, module.get_base_layer())
    if hasattr(model.encoder, "peft_config"):
        del model.encoder.peft_config
    model.config.lora = None


def merged(model):
    """`model` itself without adapters, else a merged copy (what the sentence-transformers and ONNX exports take)."""
    if not has_lora(model):
        return model
    model = copy.deepcopy(model)
    merge_lora(model)
    return model


def describe_lora(model) -> str | None:
    """One line for logs and the model card, None without adapters."""
    if not has_lora(model):
        return None
    s = model.config.lora
    adapters = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    trainable, total = model.count_parameters()
    return (
        f"LoRA r={s['r']}, alpha={s['alpha']:g}, dropout={s['dropout']:g} on {' '.join(s['target_modules'])}: "
        f"{adapters:,} adapter parameters; {trainable:,} of {total:,} train"
    )


def adapter_folder_config(config_class, name_or_path, kwargs: dict):
    """The config of an adapter folder at `name_or_path` (None for any other folder)."""
    config = kwargs.get("config")
    # Any config object counts: remote code may hold the config class of another copy of these files.
    if not hasattr(config, "to_dict"):
        hub = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        try:
            config = config_class.from_pretrained(config or name_or_path, **hub)
        except (OSError, ValueError):
            return None
    return config if getattr(config, "lora", None) is not None else None


def load_if_adapter_folder(cls, name_or_path, args, kwargs):
    """`cls.from_pretrained(name_or_path)` of an adapter folder; None for any other folder."""
    config = adapter_folder_config(cls.config_class, name_or_path, kwargs)
    return None if config is None else load_adapter_folder(cls, name_or_path, config, *args, **kwargs)


def view_if_adapter_folder(view_cls, model_cls, name_or_path, args, kwargs):
    """`view_cls` (the sequence-classification view) around an adapter folder loaded as `model_cls`; None for any
    other folder."""
    model = load_if_adapter_folder(model_cls, name_or_path, args, kwargs)
    if model is None:
        return None
    view = view_cls(model.config)
    view.sentmtl.load_state_dict(model.state_dict())
    return view.eval()


def load_adapter_folder(cls, name_or_path, folder_config, *args, base_encoder=None, **kwargs):
    """An adapter folder as a model: the base encoder (`base_encoder`, default the folder's `encoder_name_or_path`),
    checked against the adapters' fingerprint, with the folder's adapters, projection and heads."""
    config = folder_config
    from safetensors.torch import load_file
    from transformers import AutoModel
    from transformers.utils import cached_file

    from .encoders import resolve_encoder, weights_loading_kwargs

    require_peft()
    hub = {k: kwargs.pop(k) for k in HUB_KWARGS if k in kwargs}
    safetensors_only = kwargs.pop("use_safetensors", None) is not False
    kwargs.pop("config", None)
    kwargs.pop("trust_remote_code", None)
    kwargs.pop("adapter_kwargs", None)  # AutoModel's, when peft is installed: the folder's own adapter/
    unknown = sorted(k for k in kwargs if not k.startswith("_")) + [f"{len(args)} positional" for _ in args[:1]]
    if unknown:
        raise ValueError(
            f"{name_or_path} is a LoRA adapter folder, which from_pretrained loads without {unknown}; load it "
            "plainly (then .to(...)), or merge it first (model.merge_lora(); model.save_pretrained(folder))."
        )
    base = base_encoder or config.encoder_name_or_path
    path = resolve_encoder(base)
    encoder = AutoModel.from_pretrained(path, **weights_loading_kwargs(path, not safetensors_only))
    skip = ("pooler.",) if config.pooling != "pooler" else ()  # the model drops an unused pooler
    found, expected = weights_fingerprint(encoder, skip), config.lora["base_fingerprint"]
    if found != expected:
        raise ValueError(
            f"{name_or_path} holds LoRA adapters trained on the encoder {config.encoder_name_or_path} (weights "
            f"fingerprint {expected}); {base} has other weights ({found}). Load it with that encoder "
            "(from_pretrained(folder, base_encoder=its path)), or use the merged model."
        )
    model = cls(config, encoder=encoder)
    weights = load_file(cached_file(name_or_path, "model.safetensors", **hub))
    wanted = set(adapter_state_dict(model))
    missing, unexpected = sorted(wanted - set(weights)), sorted(set(weights) - wanted)
    if missing or unexpected:
        raise ValueError(
            f"{name_or_path}: its model.safetensors does not fit its config's adapters (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); was it written by another version or edited?"
        )
    model.load_state_dict(weights, strict=False)
    # As PreTrainedModel.from_pretrained does: the model names the folder it came from, which is how a continued
    # run's miner knows it starts from a trained checkpoint (its embedding, not the encoder's pooled vector).
    model.name_or_path = model.config.name_or_path = str(name_or_path)
    return model.eval()
