"""The UCI Sentiment Labelled Sentences corpus as a `datasets` builder, and a split that cannot leak."""

import hashlib
import logging
import re
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import xxhash

from .network import offline_flag, unreachable

logger = logging.getLogger(__name__)

_CITATION = """\
@inproceedings{kotzias2015group,
  title     = {From Group to Individual Labels Using Deep Features},
  author    = {Kotzias, Dimitrios and Denil, Misha and de Freitas, Nando and Smyth, Padhraic},
  booktitle = {Proceedings of the 21th ACM SIGKDD International Conference on Knowledge Discovery and Data Mining},
  pages     = {597--606},
  year      = {2015},
  doi       = {10.1145/2783258.2783380}
}
"""
_DESCRIPTION = """\
Sentiment Labelled Sentences (UCI id 331): 3,000 review sentences, 1,000 each from amazon.com (cell phones),
imdb.com (movies) and yelp.com (restaurants), 500 positive and 500 negative per site, chosen to carry a clear
sentiment. Each example has the sentence, its label, a Task B score (equal to the label here) and its source.
"""
_HOMEPAGE = "https://doi.org/10.24432/C57604"
_LICENSE = "CC BY 4.0"
_URL = "https://archive.ics.uci.edu/static/public/331/sentiment+labelled+sentences.zip"

SOURCES = ("amazon", "imdb", "yelp")
LABEL_NAMES = ("negative", "positive")
_FILES = {"amazon": "amazon_cells_labelled.txt", "imdb": "imdb_labelled.txt", "yelp": "yelp_labelled.txt"}
ON_BAD_LINES = ("error", "skip")


class CorpusFormatError(ValueError):
    """A corpus line that cannot be read; the message names the file, the line number and the text."""


@dataclass
class SkippedLine:
    file: str
    line: int
    reason: str
    text: str


def parse_labelled_lines(data: bytes, file_name: str, source: str, on_bad_lines: str = "error"):
    """`sentence<TAB>label` lines → (examples, skipped lines). Pure: the builder and the checks share it.

    Splits on b"\\n" only (U+0085 inside imdb sentences is not a line break), on the LAST tab of each line,
    and strips the trailing spaces imdb puts before the tab.
    """
    if on_bad_lines not in ON_BAD_LINES:
        raise ValueError(f"on_bad_lines={on_bad_lines!r} is not supported; choose one of {', '.join(ON_BAD_LINES)}.")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    examples, skipped = [], []
    for number, raw in enumerate(lines, start=1):
        problem, text = _check_line(raw)
        if problem is None:
            sentence, label = text
            examples.append({"sentence": sentence, "label": label, "score": float(label), "source": source})
        elif on_bad_lines == "skip":
            skipped.append(SkippedLine(file_name, number, problem, text))
        else:
            raise CorpusFormatError(
                f"{file_name}:{number}: {problem}: {text!r}. Fix the line, or pass on_bad_lines='skip' "
                "(--skip_bad_lines) to drop such lines with a report."
            )
    return examples, skipped


def _check_line(raw: bytes):
    """(None, (sentence, label)) for a good line, (problem, text as read) for a bad one."""
    try:
        line = raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as err:
        return f"undecodable bytes (not UTF-8 at byte {err.start})", raw.decode("utf-8", errors="replace")
    if "\t" not in line:
        return "no tab between sentence and label", line
    sentence, label = line.rsplit("\t", 1)
    sentence, label = sentence.strip(), label.strip()
    if label not in ("0", "1"):
        return f"label {label!r} is not 0 or 1", line
    if not sentence:
        return "empty sentence", line
    return None, (sentence, int(label))


def read_corpus_files(location, sources=SOURCES) -> dict[str, tuple[str, bytes]]:
    """{source: (display name, bytes)} from the unzipped folder or the UCI zip itself (read in place)."""
    location = Path(location)
    if not location.exists():
        raise FileNotFoundError(f"data_dir {location} does not exist; give the UCI zip or its unzipped folder.")
    found = {}
    if location.is_file():
        if not zipfile.is_zipfile(location):
            raise ValueError(f"data_dir {location} is a file but not a zip; give the UCI zip or its unzipped folder.")
        with zipfile.ZipFile(location) as archive:
            for member in archive.namelist():
                name = Path(member).name
                for source in sources:
                    if name == _FILES[source] and "__MACOSX" not in member and source not in found:
                        found[source] = (f"{location}!{member}", archive.read(member))
    else:
        for source in sources:
            matches = sorted(location.rglob(_FILES[source]))
            if matches:
                found[source] = (str(matches[0]), matches[0].read_bytes())
    missing = [_FILES[source] for source in sources if source not in found]
    if missing:
        raise FileNotFoundError(f"{location} has no {', '.join(missing)}; expected the UCI corpus files there.")
    return found


def _fingerprint(files: dict[str, tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for source in sorted(files):
        digest.update(source.encode() + hashlib.sha256(files[source][1]).digest())
    return digest.hexdigest()[:16]


def _check_download_possible(timeout: float = 5.0) -> None:
    """Fail in seconds, not after a long retry loop, when the UCI server cannot be reached."""
    hint = f"Download {_URL} elsewhere and pass --data_dir (the zip or its unzipped folder)."
    flag = offline_flag("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    if flag:
        raise ConnectionError(f"Offline mode is set ({flag}), so the corpus cannot be downloaded. {hint}")
    reason = unreachable("archive.ics.uci.edu", 443, timeout)
    if reason:
        raise ConnectionError(f"Cannot reach archive.ics.uci.edu ({reason}). {hint}")


class SentimentSentencesConfig(datasets.BuilderConfig):
    def __init__(self, sources=SOURCES, on_bad_lines="error", data_fingerprint=None, **kwargs):
        """`sources`: which sites to read. `data_fingerprint`: a hash of the files, so edited data rebuilds the cache."""
        super().__init__(**kwargs)
        self.sources = tuple(sources)
        self.on_bad_lines = on_bad_lines
        self.data_fingerprint = data_fingerprint


class SentimentSentences(datasets.GeneratorBasedBuilder):
    """UCI Sentiment Labelled Sentences (Kotzias et al., KDD 2015)."""

    BUILDER_CONFIG_CLASS = SentimentSentencesConfig
    BUILDER_CONFIGS = [SentimentSentencesConfig(name="all", sources=SOURCES, version="1.0.0")] + [
        SentimentSentencesConfig(name=source, sources=(source,), version="1.0.0") for source in SOURCES
    ]
    DEFAULT_CONFIG_NAME = "all"

    def _info(self):
        features = datasets.Features(
            {
                "sentence": datasets.Value("string"),
                "label": datasets.ClassLabel(names=list(LABEL_NAMES)),
                "score": datasets.Value("float32"),
                "source": datasets.ClassLabel(names=list(SOURCES)),
            }
        )
        return datasets.DatasetInfo(
            description=_DESCRIPTION, features=features, homepage=_HOMEPAGE, license=_LICENSE, citation=_CITATION
        )

    def _split_generators(self, dl_manager):
        location = self.config.data_dir
        if location is None:
            _check_download_possible()
            location = dl_manager.download(_URL)
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"location": location})]

    def _generate_examples(self, location):
        files = read_corpus_files(location, self.config.sources)
        for source in self.config.sources:
            name, data = files[source]
            examples, _ = parse_labelled_lines(data, name, source, self.config.on_bad_lines)
            for index, example in enumerate(examples):
                yield f"{source}-{index}", example


def load_sentiment_corpus(data_dir=None, sources=None, cache_dir=None, on_bad_lines="error") -> datasets.Dataset:
    """The corpus as one `Dataset(sentence, label, score, source)`: the one call the rest of the toolkit uses.

    `data_dir`: the unzipped UCI folder or the zip; `None` downloads the official zip. `sources`: a subset of
    amazon / imdb / yelp. `on_bad_lines="skip"` drops unreadable lines and logs how many and why.
    """
    sources = tuple(sources) if sources else SOURCES
    unknown = [source for source in sources if source not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; choose from {', '.join(SOURCES)}.")
    if data_dir is None:
        _check_download_possible()
        data_dir = datasets.DownloadManager(dataset_name="sentiment_sentences").download(_URL)
    files = read_corpus_files(data_dir, sources)

    # Read once up front: bad lines fail here with file and line, and skip reports come on cached loads too.
    skipped = []
    for source in sources:
        skipped += parse_labelled_lines(files[source][1], files[source][0], source, on_bad_lines)[1]
    if skipped:
        reasons = Counter(line.reason for line in skipped)
        detail = "; ".join(f"{count} × {reason}" for reason, count in reasons.most_common())
        first = "; ".join(f"{s.file}:{s.line}" for s in skipped[:5])
        logger.warning("Skipped %d unreadable corpus line(s): %s (first: %s)", len(skipped), detail, first)

    config_name = "all" if sources == SOURCES else "-".join(sources)
    builder = SentimentSentences(
        config_name=config_name if config_name in SentimentSentences.builder_configs else None,
        cache_dir=cache_dir,
        data_dir=str(Path(data_dir).resolve()),
        sources=sources,
        on_bad_lines=on_bad_lines,
        data_fingerprint=_fingerprint(files),
    )
    builder.download_and_prepare()
    return builder.as_dataset(split="train")


# -- the split -------------------------------------------------------------------------------------------------


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


def _key_hash(text) -> int:
    return xxhash.xxh3_64_intdigest(near_duplicate_key(str(text)).encode("utf-8", "surrogatepass"))


def _group_ids(dataset: datasets.Dataset, columns: list[str], batch_size: int = 50_000) -> np.ndarray:
    """One group id per row (int64), numbered in order of first appearance: rows with the same near-duplicate key
    share one; with several text columns (a column of lists, such as hard negatives, counts each position as one),
    rows sharing a key in any column are joined (union-find). Keys are 64-bit hashes, read batch by batch: memory
    grows by 8 bytes a row, not by a Python string per row."""
    hashes = []
    for batch in dataset.select_columns(columns).iter(batch_size=batch_size):
        per_column = []
        for column in columns:
            values = batch[column]
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
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size={test_size!r} must be between 0 and 1 (exclusive).")
    rng = np.random.default_rng(seed)
    text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
    group = _group_ids(dataset, text_columns)
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
