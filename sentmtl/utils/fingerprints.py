"""Content hashes that key the on-disk caches: a table's text, a tokenizer's behaviour, an encoder's weights.

`datasets` keys a `map` by hashing its function with dill; a fast tokenizer's hash changes once it has been called
(its truncation settings are part of the object), which turned every run into a cache miss. These hashes are of what
decides the output, and nothing else, so the same data and model give the same key in every run and process.
"""

import json
from pathlib import Path

import numpy as np
import torch
import xxhash


def combine(*parts) -> str:
    """One hex key from strings / JSON-able values (order matters)."""
    digest = xxhash.xxh3_128()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def texts_fingerprint(dataset, column: str, batch_size: int = 50_000) -> str:
    """A hash of a column's texts, in order (each text's length, then the text, so no two lists share one)."""
    digest = xxhash.xxh3_128()
    digest.update(str(dataset.num_rows).encode())
    for batch in dataset.select_columns([column]).iter(batch_size=batch_size):
        texts = [str(text) for text in batch[column]]
        digest.update(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)).tobytes())
        digest.update("".join(texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def strings_fingerprint(texts: list[str]) -> str:
    """A hash of a list of texts, in order (each text's length, then the texts, so no two lists share one)."""
    digest = xxhash.xxh3_128()
    digest.update(str(len(texts)).encode())
    digest.update(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)).tobytes())
    digest.update("".join(texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """What a tokenizer does to text: a fast tokenizer's pipeline (normaliser, pre-tokeniser, vocabulary,
    post-processor) without its call-time truncation / padding state; a slow one's class, vocabulary and special
    tokens; and for both the sides they pad and truncate on."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        pipeline.pop("truncation", None)
        pipeline.pop("padding", None)
        described = pipeline
    else:  # a slow tokenizer: its vocabulary and its options (do_lower_case, …)
        described = [sorted(tokenizer.get_vocab().items()), tokenizer.init_kwargs]
    # The sides are applied at call time (not part of the pipeline above): a left-truncating tokenizer keeps other
    # tokens of a long text than a right-truncating one.
    return combine(
        type(tokenizer).__name__,
        described,
        tokenizer.all_special_tokens,
        tokenizer.padding_side,
        tokenizer.truncation_side,
        list(tokenizer.model_input_names),
    )


# torch dtypes by the names safetensors writes in its header, so a module in memory and its saved file hash alike.
SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def weights_fingerprint(module: torch.nn.Module | dict) -> str:
    """A hash of a module's parameters and buffers (or of a state dict): names, dtypes, shapes and bytes. Equal to
    `safetensors_fingerprint` of the folder its `save_pretrained` writes (the ONNX export records it)."""
    state = module if isinstance(module, dict) else module.state_dict()
    return _tensors_fingerprint(
        (name, SAFETENSORS_DTYPES.get(tensor.dtype, str(tensor.dtype)), list(tensor.shape), tensor)
        for name, tensor in sorted(state.items())
    )


def computed_weights_fingerprint(module: torch.nn.Module) -> str:
    """`weights_fingerprint` of the weights a module computes with. LoRA adapters whose B matrices are all zero (a
    fresh run's: peft starts B at 0) add exactly nothing, so such a module is keyed as its base weights under their
    names before peft wrapped them: a fresh LoRA run then shares its teacher and miner caches with the full
    fine-tuning run and every other seed, which its random A matrices would otherwise keep apart. Trained adapters
    (any B not zero), or adapter tensors other than A and B (DoRA's magnitudes), are hashed with the rest."""
    state = module.state_dict()
    adapters = {name: tensor for name, tensor in state.items() if ".lora_" in name}
    inert = all(".lora_A." in name or ".lora_B." in name for name in adapters) and not any(
        tensor.any() for name, tensor in adapters.items() if ".lora_B." in name
    )
    if not adapters or not inert:
        return weights_fingerprint(state)
    return weights_fingerprint(
        {name.replace(".base_layer.", "."): tensor for name, tensor in state.items() if name not in adapters}
    )


def safetensors_fingerprint(folder) -> str | None:
    """`weights_fingerprint` of the weights saved in `folder` (`model.safetensors`, or the shards its index names),
    read without torch; None when the folder holds no safetensors weights."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    entries = []
    for name in files:
        with open(folder / name, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        header.pop("__metadata__", None)
        entries += [(key, value, folder / name, 8 + size) for key, value in header.items()]
    handles = {path: open(path, "rb") for path in {entry[2] for entry in entries}}  # one handle per file
    try:
        return _tensors_fingerprint(
            (key, value["dtype"], list(value["shape"]), _read(handles[path], base, *value["data_offsets"]))
            for key, value, path, base in sorted(entries, key=lambda entry: entry[0])
        )
    finally:
        for handle in handles.values():
            handle.close()


def _read(handle, base: int, start: int, end: int) -> bytes:
    handle.seek(base + start)
    return handle.read(end - start)


def _tensors_fingerprint(tensors) -> str:
    """(name, dtype name, shape, tensor or raw bytes) in name order → one hex key."""
    digest = xxhash.xxh3_128()
    for name, dtype, shape, data in tensors:
        digest.update(f"{name}:{dtype}:{tuple(shape)}".encode())
        if isinstance(data, torch.Tensor):
            data = data.detach().to("cpu").contiguous().reshape(-1)
            data = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
        digest.update(data)
    return digest.hexdigest()


__all__ = [
    "combine",
    "computed_weights_fingerprint",
    "safetensors_fingerprint",
    "strings_fingerprint",
    "texts_fingerprint",
    "tokenizer_fingerprint",
    "weights_fingerprint",
]
