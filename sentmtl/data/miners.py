"""The encoder that ranks hard-negative candidates (`hard_negatives: {miner: ...}`): its embedding and its cache key.

Which vector a miner embeds with:

- a plain encoder (a Hub name or folder, or a run that starts from one): the encoder's own pooled sentence vector,
  before sentmtl's projection (a named sentence-transformers model pooled as its config says; the run's own model
  with the run's `--pooling`). A fresh model's projection is random (or the identity): it would blur the encoder's
  similarities, or change nothing. The pooled vector is what the encoder was trained to compare — for the bundled
  all-MiniLM-L6-v2 the mean of its token vectors, which is what sentence-transformers' `mine_hard_negatives` embeds
  with (mean pooling, then normalised; cosines ignore the norm);
- a sentmtl checkpoint (`--model_name_or_path` of a continued run, or `miner: path`): the model's embedding (pooled,
  projected, normalised), the vector it was trained to retrieve with and that `encode` gives.

Candidates are then ranked by the cosine of these vectors.
"""

from dataclasses import dataclass

import numpy as np

from ..utils.fingerprints import combine, computed_weights_fingerprint, tokenizer_fingerprint


@dataclass
class Miner:
    """`encode(sentences) -> float32 [n, width]` (the texts as given: prompts are the caller's), `key` a hash of
    everything besides the texts that changes those vectors, `name` what it is (messages, the cache record), and
    `own_model`: the run's own model (the task's prompts are its prompts; another miner takes none)."""

    name: str
    key: str
    encode: object
    own_model: bool = False


def miner_encoder(
    model,
    tokenizer,
    name: str | None,
    max_length: int,
    device=None,
    precision: str = "fp32",
    allow_pickle_weights: bool = False,
) -> Miner:
    """The miner `name` (an encoder name or path, or a sentmtl checkpoint), or with None the model as the run starts:
    the pooled vector of a plain encoder, the embedding of a sentmtl checkpoint (see the module's docstring)."""
    from .. import __version__
    from ..serving.embed import encode  # embed imports the model: not needed to read a cache
    from ..serving.loading import is_sentmtl_checkpoint, load_named_encoder

    if name is not None:
        checkpoint = is_sentmtl_checkpoint(name)
        model, tokenizer = load_named_encoder(name, allow_pickle_weights)
    else:  # a model loaded from a sentmtl folder names it; a fresh model around a plain encoder names none
        origin = model.config.name_or_path
        checkpoint = bool(origin) and is_sentmtl_checkpoint(origin)
    pooled = not checkpoint
    key = combine(
        "miner",
        __version__,
        "pooled" if pooled else "embedding",
        computed_weights_fingerprint(model.encoder if pooled else model),
        model.config.pooling,
        tokenizer_fingerprint(tokenizer),
        max_length,
        precision,
    )

    def run(sentences):
        vectors = encode(
            model,
            sentences,
            tokenizer,
            pooled=pooled,
            show_progress_bar=len(sentences) > 5000,
            max_length=max_length,
            precision=precision,
            device=device,
            prompt="",  # the caller prefixes the query and document prompts
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    what = f"{name or 'the starting model'} ({'pooled encoder' if pooled else 'sentmtl embedding'})"
    return Miner(what, key, run, own_model=name is None)


class Miners:
    """The run's miners by name (None: the model as the run starts), each built on first use, on the run's device and
    in its precision (as the teacher vectors are)."""

    def __init__(self, model, tokenizer, max_length: int, device, precision: str, allow_pickle_weights: bool = False):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length
        self.device, self.precision, self.allow_pickle_weights = device, precision, allow_pickle_weights
        self.built: dict[str | None, Miner] = {}

    def __call__(self, name: str | None) -> Miner:
        if name not in self.built:
            self.built[name] = miner_encoder(
                self.model,
                self.tokenizer,
                name,
                self.max_length,
                self.device,
                self.precision,
                self.allow_pickle_weights,
            )
        return self.built[name]

    def clear(self) -> None:
        """Drop the miners (one loaded from a path is not needed once the data is prepared)."""
        self.built.clear()


__all__ = ["Miner", "Miners", "miner_encoder"]
