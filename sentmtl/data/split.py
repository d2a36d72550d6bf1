"""The leak-free train / test split every source uses: rows grouped by near-duplicate texts (in every text column, so
a pair is held out by both of its sentences), groups stratified by label and source, one side per group. Pure
functions of a table and a seed: the same table and seed give the same split in every run and process."""

import logging
import re
from collections import Counter, defaultdict

import datasets
import numpy as np
import xxhash

logger = logging.getLogger(__name__)


def _allocate(counts: dict, total: int) -> dict:
    """Split `total` over keys in proportion to `counts` (largest remainder, ties by key): sums exactly to total."""
    whole = sum(counts.values())
    exact = {key: total * count / whole for key, count in counts.items()}
    out = {key: int(np.floor(value)) for key, value in exact.items()}
    by_remainder = sorted(counts, key=lambda key: (-(exact[key] - out[key]), str(key)))
    for key in by_remainder[: total - sum(out.values())]:
        out[key] += 1
    return out


def _stratified_pick(groups_by_stratum: dict, total: int, rng: np.random.Generator) -> set:
    """Pick `total` groups: first spread over labels, then within each label over sources, at random within."""
    strata = sorted(groups_by_stratum)
    label_counts = Counter()
    for stratum in strata:
        label_counts[stratum[0]] += len(groups_by_stratum[stratum])
    per_label = _allocate(label_counts, total)
    picked = set()
    for label, label_total in per_label.items():
        label_strata = {s: len(groups_by_stratum[s]) for s in strata if s[0] == label}
        for stratum, k in _allocate(label_strata, label_total).items():
            members = groups_by_stratum[stratum]
            picked.update(members[i] for i in rng.permutation(len(members))[:k])
    return picked


_NOT_WORD = re.compile(r"[\W_]+")


def near_duplicate_key(sentence: str) -> str:
    """What makes two sentences the same input for the split: case, punctuation and spacing ignored.

    `Great phone.`, `Great Phone.` and `Great phone!.` share a key: to an uncased tokenizer the first two are the
    same tokens, and the third differs only in punctuation, so they must not sit on both sides of the split.
    """
    return " ".join(_NOT_WORD.sub(" ", sentence.casefold()).split())


def _unprompted(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _key_hash(text) -> int:
    return xxhash.xxh3_64_intdigest(near_duplicate_key(str(text)).encode("utf-8", "surrogatepass"))


def _group_ids(
    dataset: datasets.Dataset, columns: list[str], batch_size: int = 50_000, strip_prefixes: dict | None = None
) -> np.ndarray:
    """One group id per row (int64), numbered in order of first appearance: rows with the same near-duplicate key
    share one; with several text columns (a column of lists, such as hard negatives, counts each position as one),
    rows sharing a key in any column are joined (union-find). Keys are 64-bit hashes, read batch by batch: memory
    grows by 8 bytes a row, not by a Python string per row. `strip_prefixes`: {column: prompt} removed from its texts
    first (a prompted column's texts compare as the sentences they are)."""
    hashes = []
    strip_prefixes = strip_prefixes or {}
    for batch in dataset.select_columns(columns).iter(batch_size=batch_size):
        per_column = []
        for column in columns:
            values = batch[column]
            prefix = strip_prefixes.get(column)
            if prefix:
                values = [
                    [_unprompted(t, prefix) for t in v] if isinstance(v, list) else _unprompted(v, prefix)
                    for v in values
                ]
            if values and isinstance(values[0], list):  # k texts per row: k key columns
                per_column += [[row[j] for row in values] for j in range(len(values[0]))]
            else:
                per_column.append(values)
        hashes.append(np.array([[_key_hash(text) for text in column] for column in per_column], dtype=np.uint64).T)
    keys = np.concatenate(hashes) if hashes else np.zeros((0, 1), dtype=np.uint64)
    if keys.shape[1] == 1:
        roots = keys[:, 0]
    else:
        parent: dict[int, int] = {}

        def find(x):
            while parent.setdefault(x, x) != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for row in keys.tolist():
            for other in row[1:]:
                parent[find(other)] = find(row[0])
        roots = np.fromiter((find(row[0]) for row in keys.tolist()), dtype=np.uint64, count=len(keys))
    _, first, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))  # number groups by their first row
    return rank[inverse.reshape(-1)]


def _column_array(dataset: datasets.Dataset, column: str) -> np.ndarray:
    """A column as one numpy array, read from Arrow in one piece (a numpy-formatted column is read row by row:
    a minute for a million rows)."""
    return dataset.with_format("arrow")[column].to_numpy()


def train_test_split(
    dataset: datasets.Dataset,
    test_size: float = 0.2,
    seed: int = 42,
    max_samples: int | None = None,
    text_column: str | list[str] = "sentence",
    label_column: str | None = "label",
    source_column: str = "source",
    strip_prefixes: dict | None = None,
):
    """A leak-free, stratified `DatasetDict(train, test)`.

    Every group of near-duplicates (`near_duplicate_key`: the corpus's 3,000 rows are 2,972 such groups) lands on
    one side; with several text columns (sentence pairs; a column of lists, such as hard negatives, counts as one
    per position) rows that share a near-duplicate in *any* of them form one group, so neither sentence of a pair
    can sit on both sides; the test share is spread over labels first and then, within each label, over sources, so
    proportions match to within one example. `max_samples` first takes a stratified subset of that many groups (the
    seed's 1,000-sentence runs). Same seed → same split. `label_column=None` (or a dataset without it): not
    stratified by label. Worked out on arrays (group ids, labels, sources), so a million rows take seconds and
    tens of megabytes; the result selects rows of the table, which stays where it is (on disk, for a file's).
    `strip_prefixes`: {text column: prompt} left out of the comparison (prompted columns).
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size={test_size!r} must be between 0 and 1 (exclusive).")
    rng = np.random.default_rng(seed)
    text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
    group = _group_ids(dataset, text_columns, strip_prefixes=strip_prefixes)
    rows = len(group)
    has_labels = label_column is not None and label_column in dataset.column_names
    labels = _column_array(dataset, label_column) if has_labels else np.zeros(rows, dtype=np.int64)
    sources = (
        _column_array(dataset, source_column)
        if source_column in dataset.column_names
        else np.zeros(rows, dtype=np.int64)
    )

    n_all = int(group.max()) + 1 if rows else 0
    first_row = np.full(n_all, rows, dtype=np.int64)
    np.minimum.at(first_row, group, np.arange(rows))
    group_size = np.bincount(group, minlength=n_all)
    groups_by_stratum = defaultdict(list)  # (label, source) of a group's first row → its groups, in order
    for g, (label, source) in enumerate(zip(labels[first_row].tolist(), sources[first_row].tolist())):
        groups_by_stratum[(label, source)].append(g)

    selected = np.ones(rows, dtype=bool)
    if max_samples is not None:
        if not 0 < max_samples <= n_all:
            raise ValueError(
                f"max_samples={max_samples} must be between 1 and the {n_all} distinct sentences available "
                "(near-duplicates counted once)."
            )
        keep = _stratified_pick(groups_by_stratum, max_samples, rng)
        groups_by_stratum = {s: [g for g in members if g in keep] for s, members in groups_by_stratum.items()}
        groups_by_stratum = {s: members for s, members in groups_by_stratum.items() if members}
        # A subset counts distinct sentences: one copy of each, so max_samples is exact.
        selected[:] = False
        selected[first_row[sorted(keep)]] = True
        group_size = np.minimum(group_size, 1)

    n_groups = sum(len(members) for members in groups_by_stratum.values())
    logger.info(
        "Split: %d rows in %d groups of near-duplicates (case, punctuation and spacing ignored).",
        int(sum(group_size[g] for members in groups_by_stratum.values() for g in members)),
        n_groups,
    )
    if n_groups < 2:
        raise ValueError(
            f"cannot hold rows out: the {rows} rows form {n_groups} group of near-duplicates "
            "(rows sharing a text, in any text column, stay on one side). Give the data a validation "
            "file or more distinct rows."
        )
    n_test = min(max(1, round(n_groups * test_size)), n_groups - 1)
    is_test = np.zeros(n_all, dtype=bool)
    is_test[list(_stratified_pick(groups_by_stratum, n_test, rng))] = True
    train_rows = np.flatnonzero(selected & ~is_test[group])
    test_rows = np.flatnonzero(selected & is_test[group])
    return datasets.DatasetDict({"train": dataset.select(train_rows), "test": dataset.select(test_rows)})
