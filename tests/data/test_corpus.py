"""sentmtl/data/corpus.py: the UCI corpus builder: the real files' counts and quirky rows, the zip, one source,
the cache, and bad lines named by file and line."""

import logging
import time
import zipfile
from collections import Counter

import pytest

from sentmtl.data.corpus import (
    CorpusFormatError,
    SentimentSentences,
    load_sentiment_corpus,
    parse_labelled_lines,
)


def test_real_corpus_counts(corpus):
    assert corpus.num_rows == 3000
    assert sorted(corpus.features) == ["label", "score", "sentence", "source"]
    assert Counter(corpus["label"]) == {0: 1500, 1: 1500}
    assert Counter(corpus.features["source"].int2str(corpus["source"])) == {"amazon": 1000, "imdb": 1000, "yelp": 1000}
    assert len(set(corpus["sentence"])) == 2982
    assert list(corpus["score"]) == [float(label) for label in corpus["label"]]


def test_real_corpus_quirky_rows_come_back_intact(corpus):
    sentences = set(corpus["sentence"])
    # U+0085 inside a sentence (str.splitlines() would cut it in two), trailing spaces before the tab stripped.
    assert "The script is\x85was there a script?" in sentences
    assert 'This is a very "right on case" movie that delivers everything almost right in your face.' in sentences
    assert not any(s != s.strip() for s in sentences)
    imdb = corpus.filter(lambda row: row["source"] == 1)
    assert imdb.num_rows == 1000  # a CSV reader with default quoting returns 748 here


FILES = ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt")


def test_loading_from_the_zip_gives_the_same_rows(corpus, data_dir, tmp_path):
    archive = tmp_path / "sentiment+labelled+sentences.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for name in FILES:
            handle.write(data_dir / name, f"sentiment labelled sentences/{name}")
    from_zip = load_sentiment_corpus(data_dir=archive, cache_dir=tmp_path / "cache")
    assert from_zip.to_dict() == corpus.to_dict()


def test_single_source_config(data_dir, tmp_path):
    yelp = load_sentiment_corpus(data_dir=data_dir, sources=["yelp"], cache_dir=tmp_path)
    assert yelp.num_rows == 1000 and set(yelp["source"]) == {2}
    assert {"all", "amazon", "imdb", "yelp"} <= set(SentimentSentences.builder_configs)


def write_corpus(
    folder, amazon=b"Great phone.\t1\nBroke at once.\t0\n", imdb=b"Loved it.  \t1\n", yelp=b"Cold food.\t0\n"
):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in zip(FILES, (amazon, imdb, yelp)):
        (folder / name).write_bytes(data)
    return folder


def test_cached_build_is_reused_and_edits_rebuild(tmp_path):
    folder = write_corpus(tmp_path / "data")
    first = load_sentiment_corpus(data_dir=folder, cache_dir=tmp_path / "cache")
    again = load_sentiment_corpus(data_dir=folder, cache_dir=tmp_path / "cache")
    assert again.cache_files[0]["filename"] == first.cache_files[0]["filename"]
    (folder / FILES[2]).write_bytes(b"Cold food.\t0\nWarm staff.\t1\n")
    edited = load_sentiment_corpus(data_dir=folder, cache_dir=tmp_path / "cache")
    assert edited.num_rows == first.num_rows + 1


def test_parse_splits_on_last_tab_and_newline_only():
    data = "a\ttab inside\x85and NEL   \t1\nplain\t0\r\n".encode()
    examples, skipped = parse_labelled_lines(data, "f.txt", "imdb")
    assert [e["sentence"] for e in examples] == ["a\ttab inside\x85and NEL", "plain"]
    assert [e["label"] for e in examples] == [1, 0] and skipped == []


@pytest.mark.parametrize(
    "line, message",
    [
        (b"no tab here 1", r"f\.txt:2: no tab between sentence and label: 'no tab here 1'"),
        (b"Bad label.\t2", r"f\.txt:2: label '2' is not 0 or 1: 'Bad label\.\\t2'"),
        (b"   \t1", r"f\.txt:2: empty sentence: '   \\t1'"),
        (b"caf\xe9 latin-1\t1", r"f\.txt:2: undecodable bytes \(not UTF-8 at byte 3\): 'caf\ufffd latin-1\\t1'"),
    ],
)
def test_bad_lines_raise_naming_file_line_and_text(line, message):
    data = b"Fine.\t1\n" + line + b"\nAlso fine.\t0\n"
    with pytest.raises(CorpusFormatError, match=message):
        parse_labelled_lines(data, "f.txt", "amazon")
    examples, skipped = parse_labelled_lines(data, "f.txt", "amazon", on_bad_lines="skip")
    assert [e["sentence"] for e in examples] == ["Fine.", "Also fine."]
    assert [(s.line, s.file) for s in skipped] == [(2, "f.txt")]


def test_load_errors_on_a_bad_line_by_default(tmp_path):
    folder = write_corpus(tmp_path / "data", yelp=b"Cold food.\t0\nNo label here\n")
    with pytest.raises(CorpusFormatError, match=r"yelp_labelled\.txt:2: no tab"):
        load_sentiment_corpus(data_dir=folder, cache_dir=tmp_path / "cache")


def test_skip_reports_how_many_and_why(tmp_path, caplog):
    folder = write_corpus(tmp_path / "data", yelp=b"Cold food.\t0\nNo label here\nOdd.\t7\n")
    with caplog.at_level(logging.WARNING, logger="sentmtl.data.corpus"):
        dataset = load_sentiment_corpus(data_dir=folder, cache_dir=tmp_path / "cache", on_bad_lines="skip")
    assert dataset.num_rows == 4
    assert (
        "Skipped 2 unreadable corpus line(s): 1 × no tab between sentence and label; 1 × label '7' is not 0 or 1"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sentmtl.data.corpus"):
        load_sentiment_corpus(data_dir=folder, cache_dir=tmp_path / "cache", on_bad_lines="skip")
    assert "Skipped 2" in caplog.text  # reported again on a cached load: nothing is dropped silently


def test_missing_files_and_bad_locations_are_clear(tmp_path):
    folder = write_corpus(tmp_path / "data")
    (folder / FILES[1]).unlink()
    with pytest.raises(FileNotFoundError, match="has no imdb_labelled.txt"):
        load_sentiment_corpus(data_dir=folder, cache_dir=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_sentiment_corpus(data_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"unknown source\(s\) \['tripadvisor'\]; choose from amazon, imdb, yelp"):
        load_sentiment_corpus(data_dir=folder, sources=["tripadvisor"])


def test_offline_without_data_dir_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="pass --data_dir"):
        load_sentiment_corpus(cache_dir=tmp_path)
    assert time.monotonic() - start < 10
