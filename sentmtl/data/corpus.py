"""The UCI Sentiment Labelled Sentences corpus as a `datasets` builder, and a split that cannot leak."""

import hashlib
import logging
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import datasets

from ..utils.network import offline_flag, unreachable
from .split import near_duplicate_key, train_test_split  # noqa: F401 (0.2 imported the split from here)

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
