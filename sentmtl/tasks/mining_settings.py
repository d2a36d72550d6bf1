"""A contrastive task's `hard_negatives` option: its settings, their defaults and their checks (pure; the mining itself
is `sentmtl.data.mining`).

The settings are sentence-transformers' `mine_hard_negatives` parameters, one to one, with its defaults and meaning
(sentence_transformers/util/hard_negatives.py), plus `miner` (which encoder ranks the candidates) and `corpus` (more
candidate documents).
"""

import math
from dataclasses import asdict, dataclass

SAMPLING_STRATEGIES = ("top", "random")


@dataclass(frozen=True)
class MiningSettings:
    """How hard negatives are mined (sentence-transformers' names and defaults). Ranks count from the candidate most
    similar to the anchor (0), among the candidates left once the anchor's own text, its positives and those the
    score and margin rules drop are set aside."""

    num_negatives: int = 3  # negatives per row; a row with fewer found does not train (reported)
    range_min: int = 0  # skip the first range_min candidates (likely unlabelled positives)
    # Consider candidates up to this rank; None: range_min + num_negatives + the most positives of an anchor, or
    # range_min + 10 × num_negatives + that when a margin or max_score may drop some (sentence-transformers' rule).
    range_max: int | None = None
    max_score: float | None = None  # drop candidates whose cosine to the anchor is above it
    min_score: float | None = None  # drop candidates whose cosine to the anchor is below it
    absolute_margin: float | None = None  # drop candidates with cosine + margin > the anchor's lowest positive cosine
    relative_margin: float | None = None  # drop candidates with cosine > that positive cosine − |it| × margin
    sampling_strategy: str = "top"  # top: the first num_negatives in rank order; random: num_negatives of the range
    miner: str | None = None  # an encoder name or path, or a sentmtl checkpoint; None: the model as the run starts
    corpus: dict | None = None  # more candidates: {file: path, columns: [...]} or {stsb: folder}

    def key(self, seed: int) -> dict:
        """What decides the mined negatives besides the texts, the miner and the prompts (the seed only for random
        sampling: top's negatives are the same for every seed)."""
        out = {name: value for name, value in asdict(self).items() if name not in ("miner", "corpus")}
        return {**out, "seed": seed} if self.sampling_strategy == "random" else out

    def window(self, max_positives: int) -> int:
        """range_max as given, else derived as sentence-transformers derives it."""
        if self.range_max is not None:
            return self.range_max
        filtering = any(v is not None for v in (self.absolute_margin, self.relative_margin, self.max_score))
        return self.range_min + self.num_negatives * (10 if filtering else 1) + max_positives


def _integer(name: str, value, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"hard_negatives {name} {value!r}: an integer >= {least}.")


def _number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"hard_negatives {name} {value!r}: a number (a cosine similarity, or a margin of one).")


def _corpus(value) -> None:
    ok = isinstance(value, dict) and (set(value) == {"stsb"} or ("file" in value and set(value) <= {"file", "columns"}))
    columns = value.get("columns") if isinstance(value, dict) else None
    if columns is not None and (
        not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)
    ):
        ok = False
    if not ok:
        raise ValueError(
            f"hard_negatives corpus {value!r}: use {{stsb: folder}} or {{file: path, columns: [...]}} (columns "
            "default to the task's text columns)."
        )


def mining_settings(value) -> MiningSettings:
    """The `hard_negatives` mapping of a `tasks:` entry as `MiningSettings`; a ValueError names the bad key or value
    and what is accepted."""
    known = MiningSettings.__dataclass_fields__
    if not isinstance(value, dict):
        raise ValueError(
            f"hard_negatives {value!r}: a mapping of settings ({', '.join(known)}); {{}} for the defaults."
        )
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"hard_negatives: unknown setting(s) {unknown}; accepted: {', '.join(known)}.")
    settings = MiningSettings(**value)
    _integer("num_negatives", settings.num_negatives, 1)
    _integer("range_min", settings.range_min, 0)
    if settings.range_max is not None:
        _integer("range_max", settings.range_max, 1)
        if settings.range_min >= settings.range_max:
            raise ValueError(
                f"hard_negatives range_min {settings.range_min} must be below range_max {settings.range_max}."
            )
        if settings.num_negatives > settings.range_max - settings.range_min:
            raise ValueError(
                f"hard_negatives num_negatives {settings.num_negatives}: only {settings.range_max - settings.range_min}"
                f" candidates lie between range_min {settings.range_min} and range_max {settings.range_max}; lower "
                "num_negatives or range_min, or raise range_max."
            )
    for name in ("max_score", "min_score", "absolute_margin", "relative_margin"):
        if getattr(settings, name) is not None:
            _number(name, getattr(settings, name))
    if settings.min_score is not None and settings.max_score is not None and settings.min_score > settings.max_score:
        raise ValueError(
            f"hard_negatives min_score {settings.min_score} is above max_score {settings.max_score}: no candidate "
            "could pass both."
        )
    if settings.sampling_strategy not in SAMPLING_STRATEGIES:
        raise ValueError(
            f"hard_negatives sampling_strategy {settings.sampling_strategy!r}: one of {', '.join(SAMPLING_STRATEGIES)}."
        )
    if settings.miner is not None and (not isinstance(settings.miner, str) or not settings.miner.strip()):
        raise ValueError(f"hard_negatives miner {settings.miner!r}: an encoder name or path, or a sentmtl checkpoint.")
    if settings.corpus is not None:
        _corpus(settings.corpus)
    return settings


def check_hard_negatives(value) -> None:
    mining_settings(value)


__all__ = ["MiningSettings", "SAMPLING_STRATEGIES", "check_hard_negatives", "mining_settings"]
