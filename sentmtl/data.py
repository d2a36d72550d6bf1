"""From rows to batches: bring-your-own files, tokenisation, and the collator."""

from pathlib import Path

import datasets
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from .corpus import LABEL_NAMES

_LOADERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
NO_SOURCE = -1  # rows from user files carry no amazon / imdb / yelp source


def load_data_files(
    train_file=None,
    validation_file=None,
    text_column: str = "sentence",
    label_column: str = "label",
    score_column: str = "score",
    label_names=LABEL_NAMES,
    cache_dir=None,
) -> datasets.DatasetDict:
    """User CSV / TSV / JSON / JSONL / Parquet files → `DatasetDict(train?, test?)` of (sentence, label, score, source).

    Labels may be ids (0 … n-1) or names from `label_names` (any case). `score` is optional: when the column is
    absent it is derived from the label (label id / (n - 1), so negative → 0.0, positive → 1.0).
    """
    out = {}
    for split, file in (("train", train_file), ("test", validation_file)):
        if file is not None:
            out[split] = _load_one(Path(file), text_column, label_column, score_column, tuple(label_names), cache_dir)
    if not out:
        raise ValueError("load_data_files needs a train_file and/or a validation_file.")
    return datasets.DatasetDict(out)


def read_table(path, cache_dir=None) -> datasets.Dataset:
    """A CSV / TSV / JSON / JSONL / Parquet file as a `Dataset`, its columns as they are."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _LOADERS:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(_LOADERS)}.")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
    return datasets.load_dataset(_LOADERS[suffix], data_files=str(path), split="train", cache_dir=cache_dir, **kwargs)


def first_line(path) -> int:
    """The file line of a table's first row, as a person counts: CSV's header is line 1."""
    return 2 if Path(path).suffix.lower() in (".csv", ".tsv") else 1


def _load_one(path, text_column, label_column, score_column, label_names, cache_dir) -> datasets.Dataset:
    raw = read_table(path, cache_dir)
    for column in (text_column, label_column):
        if column not in raw.column_names:
            raise ValueError(f"{path}: no {column!r} column (columns: {raw.column_names}); set the column name option.")
    has_score = score_column in raw.column_names
    lookup = {name.lower(): index for index, name in enumerate(label_names)}
    lookup.update({str(index): index for index in range(len(label_names))})
    first_row = first_line(path)

    sentences, labels, scores = [], [], []
    texts, raw_labels = list(raw[text_column]), list(raw[label_column])
    raw_scores = list(raw[score_column]) if has_score else [None] * len(texts)
    for offset, (text, label, score) in enumerate(zip(texts, raw_labels, raw_scores)):
        where = f"{path}:{offset + first_row}"
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: empty {text_column!r} ({text!r}); every row needs text.")
        label_id = lookup.get(str(label).strip().lower())
        if label_id is None:
            raise ValueError(f"{where}: label {label!r} is not one of {sorted(lookup)}; set --class_names to map names.")
        if has_score:
            if score is None or not 0.0 <= float(score) <= 1.0:
                raise ValueError(f"{where}: score {score!r} must be a number in [0, 1].")
            score = float(score)
        else:
            score = label_id / (len(label_names) - 1)
        sentences.append(text.strip())
        labels.append(label_id)
        scores.append(score)
    features = datasets.Features(
        {
            "sentence": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(label_names)),
            "score": datasets.Value("float32"),
            "source": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {"sentence": sentences, "label": labels, "score": scores, "source": [NO_SOURCE] * len(sentences)},
        features=features,
    )


def tokenize_dataset(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.Dataset:
    """(sentence, label, score, source) → (input_ids, attention_mask, …, labels, scores, sources), unpadded.

    Padding happens per batch in the collator, so a batch is only as long as its longest sentence.
    """

    def tokenize(batch):
        encoded = tokenizer(batch["sentence"], truncation=True, max_length=max_length)
        encoded["labels"] = batch["label"]
        encoded["scores"] = batch["score"]
        encoded["sources"] = batch["source"]
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="Tokenising")


def build_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Dynamic padding; `labels` / `scores` / `sources` pass through as tensors."""
    return DataCollatorWithPadding(tokenizer)
