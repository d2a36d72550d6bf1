"""sentmtl/data/columns.py: a table's columns converted batch by batch (the same as in one batch, contrastive ids
continuing across batches, errors naming the table's line) and cached by a fingerprint that is stable across runs."""

import pytest
from helpers import write_csv

import sentmtl.data.columns as columns
import sentmtl.data.sources as task_data
from sentmtl.data.batching import tokenize_source
from sentmtl.data.files import read_table
from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.model.task_spec import TaskSpec
from sentmtl.training.arguments import DataArguments


def test_table_and_token_fingerprints_are_stable(tiny_encoder_dir, synthetic_csv, tiny_tokenizer):
    """The caches are found again only if the same data gives the same fingerprint in the next run, and a called
    tokenizer hashes differently under `datasets`' own hashing."""
    tasks = [
        RunTask(
            TaskSpec("sentiment", "classification", labels=["negative", "positive"]),
            DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment"),
        )
    ]
    first, _ = columns.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2)
    tokens = tokenize_source(first, tiny_tokenizer, 32)
    tiny_tokenizer(["the film"], truncation=True, max_length=4)
    second, _ = columns.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2)
    assert second._fingerprint == first._fingerprint
    assert first.cache_files and second.cache_files == first.cache_files  # on disk, beside the file's Arrow cache
    assert tokenize_source(second, tiny_tokenizer, 32)._fingerprint == tokens._fingerprint
    assert tokenize_source(second, tiny_tokenizer, 16)._fingerprint != tokens._fingerprint
    other = [
        RunTask(
            TaskSpec("sentiment", "score"),
            DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment"),
        )
    ]
    with pytest.raises(ValueError, match="is not a number"):
        columns.table_columns(read_table(synthetic_csv), other, "train.csv", 2)  # other tasks: not the cached table


def test_batches_give_the_same_columns_as_one_batch(tmp_path, monkeypatch):
    """Contrastive ids number the table's distinct texts across batches; errors name the table's line, not the
    batch's."""
    rows = [(f"q{i % 7}", f"d{i % 5}", f"n{i % 3}", i / 20) for i in range(20)]
    path = write_csv(tmp_path / "pairs.csv", ("anchor", "positive", "negative", "score"), rows)
    task = RunTask(
        TaskSpec("r", "contrastive"),
        DataSpec(
            {"train_file": str(path)},
            text_column="anchor",
            text_pair_column="positive",
        ),
        {"negative_columns": ["negative"], "min_score": 0.2},
    )
    whole, _ = columns.table_columns(read_table(path), [task], "pairs.csv", 2, documents=["extra", "q1"])
    monkeypatch.setattr(columns, "BATCH_ROWS", 3)
    batched, _ = columns.table_columns(read_table(path), [task], "pairs.csv", 2, documents=["extra", "q1"])
    assert batched["target__r"] == whole["target__r"] and batched["text"] == whole["text"]
    assert whole.num_rows == 21 and whole["target__r"][-1][0] == 2  # "q1" is an anchor: only "extra" joins
    bad = write_csv(
        tmp_path / "bad.csv", ("sentence", "label"), [(f"s{i}", "positive" if i != 7 else "maybe") for i in range(10)]
    )
    label = RunTask(
        TaskSpec("c", "classification", labels=["negative", "positive"]), DataSpec({"train_file": str(bad)})
    )
    with pytest.raises(ValueError, match=r"bad.csv \(train\), line 9, column 'label': label 'maybe'"):
        task_data.build_sources([label], DataArguments(), seed=0)
