import json

import pytest

from sentmtl.data import NO_SOURCE, build_collator, load_data_files, tokenize_dataset


def test_csv_with_string_labels_and_derived_scores(synthetic_csv):
    data = load_data_files(synthetic_csv, text_column="text", label_column="sentiment")
    train = data["train"]
    assert train.num_rows == 64
    assert sorted(train.features) == ["label", "score", "sentence", "source"]
    assert list(train["score"]) == [float(label) for label in train["label"]]
    assert set(train["source"]) == {NO_SOURCE}


def test_jsonl_with_explicit_scores(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"sentence": "good", "label": 1, "score": 0.8},
        {"sentence": "bad", "label": 0, "score": 0.1},
    ]))  # fmt: skip
    data = load_data_files(validation_file=None, train_file=path)["train"]
    assert list(data["label"]) == [1, 0]
    assert list(data["score"]) == pytest.approx([0.8, 0.1])


@pytest.mark.parametrize(
    "content, message",
    [
        ("sentence,label\nfine,1\n,0\n", r"data\.csv:3: empty 'sentence'"),
        ("sentence,label\nfine,1\nodd,maybe\n", r"data\.csv:3: label 'maybe' is not one of \['0', '1', 'negative', 'positive'\]"),
        ("text,label\nfine,1\n", r"no 'sentence' column \(columns: \['text', 'label'\]\)"),
        ("sentence,label,score\nfine,1,1.7\n", r"data\.csv:2: score 1\.7 must be a number in \[0, 1\]"),
    ],
)
def test_bad_rows_name_file_row_and_value(tmp_path, content, message):
    path = tmp_path / "data.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_data_files(path)


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported file type '\.xlsx'"):
        load_data_files(tmp_path / "data.xlsx")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_data_files(tmp_path / "data.csv")


def test_tokenise_and_collate_pad_per_batch(synthetic_csv, tiny_tokenizer):
    data = load_data_files(synthetic_csv, text_column="text", label_column="sentiment")["train"]
    tokenized = tokenize_dataset(data, tiny_tokenizer, max_length=32)
    assert {"input_ids", "attention_mask", "labels", "scores", "sources"} <= set(tokenized.column_names)
    batch = build_collator(tiny_tokenizer)([tokenized[i] for i in range(4)])
    longest = max(len(tokenized[i]["input_ids"]) for i in range(4))
    assert batch["input_ids"].shape == (4, longest)
    assert batch["scores"].dtype.is_floating_point and batch["labels"].tolist() == list(tokenized["labels"][:4])
