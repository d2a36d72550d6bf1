"""sentmtl/serving/embed_io.py: reading sentences to embed: lines kept whole, errors naming file and line."""

import pytest

from sentmtl.serving.embed_io import read_sentences


def test_read_sentences_txt_keeps_nel_inside_a_line(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("one\u0085still one\ntwo\n", encoding="utf-8")
    assert read_sentences(path) == ["one\u0085still one", "two"]


def test_read_sentences_errors_name_file_and_line(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("fine\n   \nalso fine\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"s\.txt:2: empty sentence"):
        read_sentences(path)
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"text": "hi"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"s\.jsonl:1: no 'sentence' field \(found \['text'\]\)"):
        read_sentences(jsonl)
    assert read_sentences(jsonl, text_column="text") == ["hi"]
