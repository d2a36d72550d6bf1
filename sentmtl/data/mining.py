"""Mined hard negatives: for each (anchor, positive) training row, the documents a miner ranks closest to the anchor
that are not its positives — sentence-transformers' `mine_hard_negatives`, with its settings and their meaning
(`sentmtl.tasks.mining_settings`), cached on disk like the teacher vectors.

The candidates are the rows' own positives (and a task's `corpus`), ranked by the cosine of the miner's vectors of
the anchor and the candidate (`sentmtl.data.miners`). Never a candidate: the anchor's own text, any positive of the
same anchor (an anchor on several rows: all of its positives). A row gets the negatives of its anchor; a row with
fewer than `num_negatives` does not train (a batch needs the same number of negatives on every row; what
sentence-transformers' n-tuple output does too, and its triplet output for one negative), and the run logs how many.

Cached per key — the miner's weights and settings (`Miner.key`), the mining settings (the seed for random sampling),
the query and document prompts, and the texts — as one Arrow file of each row's negatives (`disk_cache`): a second run
reads it; under DDP one process mines while the others wait on its lock, then read.
"""

import logging
import random
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets.arrow_writer import ArrowWriter

from ..tasks.io import task_io
from ..tasks.mining_settings import MiningSettings
from ..utils.fingerprints import combine, strings_fingerprint
from .columns import TARGET_PREFIX, role_prefixes
from .disk_cache import cached_table
from .miners import Miner
from .plan import RunTask
from .teacher_cache import default_cache_dir

logger = logging.getLogger(__name__)
CACHE_FORMAT = 1  # bump when the file layout changes: older entries are then misses, not misreads
NEGATIVES = "negatives"
# Anchors scored against the whole corpus at a time: sentence-transformers' faiss_batch_size, fewer where the score
# matrix would pass 2^26 floats (256 MB; 16,384 anchors × 1M documents would be 64 GB).
CHUNK, MAX_SCORES = 16_384, 1 << 26


def rank_negatives(
    queries: torch.Tensor,
    documents: torch.Tensor,
    positives: list[list[int]],
    own: list[int],
    settings: MiningSettings,
    rng: random.Random | None = None,
    chunk: int = CHUNK,
) -> list[list[int]]:
    """Per query, the indices of its negatives among `documents`, most similar first (at most `num_negatives`).
    `queries` `[q, d]` and `documents` `[n, d]` are unit vectors; `positives[i]` the documents that are query i's
    positives, `own[i]` the document that is its own text (-1: none). sentence-transformers' selection, step by step."""
    count = max(len(p) for p in positives)
    window = settings.window(count)
    wanted = window + count + 1  # room for the anchor's own text and its positives among the candidates
    scores, indices = [], []
    chunk = max(1, min(chunk, MAX_SCORES // len(documents)))
    for start in range(0, len(queries), chunk):
        top = torch.topk(queries[start : start + chunk] @ documents.T, k=min(wanted, len(documents)), dim=1)
        scores.append(top.values)
        indices.append(top.indices)
    scores, indices = torch.cat(scores), torch.cat(indices)
    if scores.shape[1] < wanted:  # fewer documents than candidates wanted: pad with none
        pad = wanted - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((len(scores), pad), -torch.inf)], dim=1)
        indices = torch.cat([indices, indices.new_full((len(indices), pad), -1)], dim=1)
    rows = torch.arange(len(queries))
    excluded = (indices == -1) | (indices == torch.tensor(own)[:, None])
    # Query i's positive p as the key i·(n+1)+p+1, the candidates likewise: one sorted search finds them all.
    stride = len(documents) + 1
    query_of = torch.tensor([i for i, p in enumerate(positives) for _ in p], dtype=torch.long)
    flat = torch.tensor([d for p in positives for d in p], dtype=torch.long)
    keys = (query_of * stride + flat + 1).sort().values
    candidates = rows[:, None] * stride + indices + 1
    at = torch.searchsorted(keys, candidates).clamp(max=len(keys) - 1)
    excluded |= keys[at] == candidates
    scores = scores.masked_fill(excluded, -torch.inf)
    # The margins are taken from the anchor's least similar positive (the harder one, sentence-transformers' choice).
    positive = torch.full((len(queries),), torch.inf).scatter_reduce(
        0, query_of, (queries[query_of] * documents[flat]).sum(-1), reduce="amin"
    )[:, None]
    drop = torch.zeros_like(excluded)
    if settings.absolute_margin is not None:
        drop |= scores + settings.absolute_margin > positive
    if settings.relative_margin is not None:  # |positive|: the threshold stays below a negative positive score too
        drop |= scores > positive - positive.abs() * settings.relative_margin
    if settings.max_score is not None:
        drop |= scores > settings.max_score
    if settings.min_score is not None:
        drop |= scores < settings.min_score
    scores = scores.masked_fill(drop, -torch.inf)
    # The window: the first `window` candidates left, less the first `range_min` of them.
    scores, order = torch.topk(scores, k=window, dim=1)
    scores, indices = scores[:, settings.range_min :], indices[rows[:, None], order][:, settings.range_min :]
    k, out = settings.num_negatives, []
    rng = rng or random.Random(0)
    for row_scores, row_indices in zip(scores.tolist(), indices.tolist()):
        finite = sum(score != -np.inf for score in row_scores)
        if settings.sampling_strategy == "random" and finite > k:  # k of the candidates left, best first
            picked = sorted(rng.sample(range(finite), k))
        else:
            picked = range(min(k, finite))
        out.append([row_indices[i] for i in picked])
    return out


def mine_hard_negatives(
    anchors: list[str],
    positives: list[str],
    miner: Miner,
    settings: MiningSettings,
    corpus: list[str] = (),
    query_prompt: str = "",
    document_prompt: str = "",
    cache_dir=None,
    seed: int = 0,
) -> tuple[list[list[str]], bool]:
    """(per row, its anchor's negatives — at most `num_negatives` texts, most similar first —, whether they were read
    from the cache). Row i is the pair (`anchors[i]`, `positives[i]`); the candidates are `corpus` and the positives.
    `query_prompt` / `document_prompt` are prefixed to the anchors / the candidates before they are embedded (the
    texts returned are without them)."""
    anchors, positives, corpus = list(anchors), list(positives), list(corpus)
    key = combine(
        CACHE_FORMAT,
        "mined negatives",
        miner.key,
        settings.key(seed),
        query_prompt,
        document_prompt,
        *(strings_fingerprint(texts) for texts in (anchors, positives, corpus)),
    )
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    expected = {"format": CACHE_FORMAT, "rows": len(anchors), "num_negatives": settings.num_negatives}
    features = datasets.Features({NEGATIVES: datasets.List(datasets.Value("string"))})

    def write(path: Path) -> dict:
        mined = _mine(anchors, positives, corpus, miner, settings, query_prompt, document_prompt, seed)
        writer = ArrowWriter(features=features, path=str(path))
        try:
            writer.write_table(pa.table({NEGATIVES: mined}, schema=features.arrow_schema))
            writer.finalize()
        finally:
            writer.close()
        return {"miner": miner.name, "rows_with_all": sum(len(n) == settings.num_negatives for n in mined)}

    table, hit = cached_table(folder, key, expected, write, "Mined negatives")
    return table[NEGATIVES], hit


def _mine(anchors, positives, corpus, miner, settings, query_prompt, document_prompt, seed) -> list[list[str]]:
    """Each row's negatives: anchors and documents deduplicated (an anchor's positives are those of all its rows),
    embedded once, ranked (`rank_negatives`)."""
    documents = list(dict.fromkeys(corpus + positives))  # sentence-transformers' order: the corpus, then the positives
    position = {text: i for i, text in enumerate(documents)}
    queries = list(dict.fromkeys(anchors))
    query_index = {text: i for i, text in enumerate(queries)}
    own_positives = [[] for _ in queries]
    for anchor, positive in zip(anchors, positives):
        if position[positive] not in own_positives[query_index[anchor]]:
            own_positives[query_index[anchor]].append(position[positive])

    def embedded(texts, prompt):
        vectors = torch.from_numpy(miner.encode([prompt + text for text in texts]))
        return torch.nn.functional.normalize(vectors.float(), dim=-1)

    logger.info(
        "Mining hard negatives for %d anchors among %d documents (%s).", len(queries), len(documents), miner.name
    )
    found = rank_negatives(
        embedded(queries, query_prompt),
        embedded(documents, document_prompt),
        own_positives,
        [position.get(text, -1) for text in queries],
        settings,
        random.Random(seed),
    )
    return [[documents[i] for i in found[query_index[anchor]]] for anchor in anchors]


def add_mined_negatives(
    train: datasets.Dataset,
    members: list[RunTask],
    miner_for,
    readers,
    where: str,
    cache_dir=None,
    prompt_for=None,
    seed: int = 0,
) -> datasets.Dataset:
    """A source's training rows with mined hard negatives as their `negatives`, for the tasks that ask for them
    (`TaskIO.mining`; tasks sharing a source share its settings), their targets renumbered by their type
    (`TaskIO.with_negatives`); rows that got fewer than `num_negatives` are left out, and the counts logged.
    `miner_for(name or None) -> Miner`; `prompt_for`: the model config's (the table's texts are prompted)."""
    requests = [(m, request) for m in members if (request := task_io(m.spec).mining(m, readers)) is not None]
    if not requests:
        return train
    if miner_for is None:
        raise ValueError(f"{where}: hard_negatives needs a miner: build_sources(..., miner_for=Miners(...)).")
    request = requests[0][1]
    settings, k = request.settings, request.settings.num_negatives
    prefixes = role_prefixes(members, prompt_for, where)
    text, pair = prefixes.get("text", ""), prefixes.get("text_pair", "")
    anchors = [t[len(text) :] for t in train["text"]]  # the sentences as they are, without the task's prompts
    positives = [t[len(pair) :] for t in train["text_pair"]]
    miner = miner_for(settings.miner)
    # The task's prompts are the run's model's: they apply when it mines, not for another encoder.
    prompts = (text, pair) if miner.own_model else ("", "")
    mined, hit = mine_hard_negatives(anchors, positives, miner, settings, request.corpus, *prompts, cache_dir, seed)
    keep = np.flatnonzero([len(found) == k for found in mined])
    logger.info(
        "%s: hard negatives mined for %s%s: %d of %d training rows have %d; %d have fewer and do not train "
        "(every row needs the same number).",
        where,
        ", ".join(repr(m.spec.name) for m, _ in requests),
        " (read from the cache)" if hit else "",
        len(keep),
        train.num_rows,
        k,
        train.num_rows - len(keep),
    )
    if not len(keep):
        raise ValueError(
            f"{where}: no training row has {k} mined hard negatives; lower num_negatives, loosen the margins or "
            "scores, raise range_max, or give a corpus."
        )
    negative, kept = prefixes.get("negatives", ""), keep.tolist()
    train = train.select(keep).flatten_indices()
    train = train.add_column(NEGATIVES, [[negative + t for t in mined[i]] for i in kept])
    # The ids number sentences, without their prompts (as `TaskIO.targets` read them): a mined negative that is
    # another row's anchor is that anchor's sentence.
    texts = {"text": [anchors[i] for i in kept], "text_pair": [positives[i] for i in kept]}
    texts[NEGATIVES] = [list(mined[i]) for i in kept]
    for member, _ in requests:
        column = TARGET_PREFIX + member.spec.name
        targets = task_io(member.spec).with_negatives(member, train[column], texts)
        train = train.remove_columns(column).add_column(column, targets)
    return train


__all__ = ["CACHE_FORMAT", "NEGATIVES", "add_mined_negatives", "mine_hard_negatives", "rank_negatives"]
