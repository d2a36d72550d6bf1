"""sentmtl/data/files.py: a user's tables are read as they are; unsupported and missing files are named."""

import json

import pytest

from sentmtl.data.files import read_table


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
