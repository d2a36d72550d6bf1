"""Content hashes that key the on-disk caches: a table's text, a tokenizer's behaviour, an encoder's weights.

`datasets` keys a `map` by hashing its function with dill; a fast tokenizer's hash changes once it has been called
(its truncation settings are part of the object), which turned every run into a cache miss. These hashes are of what
decides the output, and nothing else, so the same data and model give the same key in every run and process.
"""

import json

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


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A hash of a module's parameters and buffers: names, dtypes, shapes and bytes."""
    digest = xxhash.xxh3_128()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        tensor = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


__all__ = ["combine", "texts_fingerprint", "tokenizer_fingerprint", "weights_fingerprint"]
