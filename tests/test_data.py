"""Reading a user's table, and the documented Python path from a `datasets` table to batches (`batching.prepare`)."""

import json

import datasets
import pytest

from sentmtl.data.batching import MultiTaskCollator, prepare
from sentmtl.data.files import read_table
from sentmtl.model.task_spec import TaskSpec

SEED_TASKS = [
    TaskSpec("classification", "classification", labels=["negative", "positive"]),
    TaskSpec("sentiment", "score"),
]


def test_tables_are_read_as_they_are(synthetic_csv, tmp_path):
    table = read_table(synthetic_csv)
    assert table.num_rows == 64 and table.column_names == ["text", "sentiment"]
    path = tmp_path / "data.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in [{"sentence": "good", "score": 0.8}, {"sentence": "bad", "score": 0.1}])
    )
    assert list(read_table(path)["score"]) == pytest.approx([0.8, 0.1])


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported file type '\.xlsx'"):
        read_table(tmp_path / "data.xlsx")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_table(tmp_path / "data.csv")


def test_prepare_tokenises_and_collate_pads_per_batch(tiny_tokenizer):
    table = datasets.Dataset.from_dict(
        {
            "sentence": ["the film was good .", "bad .", "the plot was very boring .", "fine ."],
            "label": ["positive", "negative", "Negative", "1"],
            "score": [0.9, 0.1, 0.2, 0.7],
        }
    )
    tokenized = prepare(table, SEED_TASKS, tiny_tokenizer, max_length=32)
    assert {"input_ids", "attention_mask", "target__classification", "target__sentiment", "domain"} <= set(
        tokenized.column_names
    )
    batch = MultiTaskCollator(tiny_tokenizer, SEED_TASKS)([tokenized[i] for i in range(4)])
    longest = max(len(tokenized[i]["input_ids"]) for i in range(4))
    assert batch["input_ids"].shape == (4, longest)
    assert batch["task_labels"]["classification"].tolist() == [1, 0, 0, 1]
    assert batch["task_labels"]["sentiment"].dtype.is_floating_point


def test_prepare_names_bad_values_and_missing_columns(tiny_tokenizer):
    table = datasets.Dataset.from_dict({"sentence": ["good", "odd"], "label": ["positive", "maybe"]})
    with pytest.raises(ValueError, match=r"the table, row 1, column 'label': label 'maybe' is not one of the names"):
        prepare(table, SEED_TASKS, tiny_tokenizer)
    with pytest.raises(ValueError, match="none of the tasks' target columns"):
        prepare(table.rename_column("label", "y"), SEED_TASKS, tiny_tokenizer)
    with pytest.raises(ValueError, match=r"label_columns names \['stars'\]"):
        prepare(table, SEED_TASKS, tiny_tokenizer, label_columns={"stars": "label"})
