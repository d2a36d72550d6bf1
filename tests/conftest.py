"""Shared fixtures: a tiny random BERT (fast tests), the real bundled encoder (a few tests), the real corpus, a tiny
model trained once, its ONNX export, and the files of retrieval and streamed runs. Plain helpers: helpers.py."""

import copy
import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from helpers import (
    POSITIVE_WORDS,
    REPO_ROOT,
    TOPICS,
    encoder_dir,
    pair_rows,
    synthetic_rows,
    tiny_run_flags,
    write_csv,
    write_dict_csv,
)
from transformers import BertConfig, BertModel, BertTokenizer

import sentmtl

# A vocabulary the tests write themselves: enough words for the synthetic sentences (helpers.synthetic_rows).
TINY_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . ! , the a it this was is i and not very really "
    "good great love excellent wonderful happy best fine "
    "bad awful hate terrible worst boring poor broken "
    "movie film plot food service phone place battery acting story"
).split()


@pytest.fixture(scope="session", autouse=True)
def _own_datasets_cache(tmp_path_factory):
    """`datasets`' cache (the Arrow files of every table read, the corpus build) and the copies of remote code in the
    session's temporary folder, for this process and every process a test starts: the tests neither read what an
    earlier run left in the user's caches nor write there."""
    import datasets.config

    root = tmp_path_factory.mktemp("hf_caches")
    cache = root / "datasets"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_DATASETS_CACHE", str(cache))
        patch.setenv("HF_MODULES_CACHE", str(root / "modules"))
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        patch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / datasets.config.DOWNLOADED_DATASETS_DIR)
        patch.setattr(
            datasets.config,
            "EXTRACTED_DATASETS_PATH",
            cache / datasets.config.DOWNLOADED_DATASETS_DIR / datasets.config.EXTRACTED_DATASETS_DIR,
        )
        yield root


@pytest.fixture(autouse=True)
def _own_teacher_cache(tmp_path, monkeypatch):
    """Each test its own teacher vector cache: a run must not read vectors an earlier test computed (tests that
    count teacher calls, or change a model in place under the same name, would see the other's)."""
    import sentmtl.data.teacher_cache

    monkeypatch.setattr(sentmtl.data.teacher_cache, "default_cache_dir", lambda: tmp_path / "teacher_cache")


@pytest.fixture(autouse=True)
def _own_bf16_probe_cache(tmp_path, monkeypatch):
    """The CPU bf16 probe's verdicts (`auto` precision on CPUs with native bf16) go to the test's tmp_path, not the
    user's datasets cache."""
    import sentmtl.serving.precision

    monkeypatch.setattr(sentmtl.serving.precision, "probe_cache_dir", lambda: tmp_path / "bf16_probe")


# -- models -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> Path:
    """A random 2-layer BERT (hidden 32) and its tokenizer, saved like any Hub encoder."""
    path = tmp_path_factory.mktemp("tiny-bert")
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(TINY_VOCAB) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    config = BertConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_mpnet_dir(tmp_path, tiny_encoder_dir):
    """A tiny random MPNet (its transformers layers lack the checkpointing switch; sentmtl gives it to them) with the
    tiny tokenizer."""
    return encoder_dir(tmp_path, "mpnet", tiny_encoder_dir)


@pytest.fixture
def encoder_without_dropout(tiny_encoder_dir, tmp_path):
    """The tiny encoder with its own dropout off: random masks differ between 1 and 2 processes,
    and between compiled and eager steps."""

    path = tmp_path / "no-dropout"
    shutil.copytree(tiny_encoder_dir, path)
    config = json.loads((path / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def _tiny_model_and_tokenizer(tiny_encoder_dir):
    torch.manual_seed(0)
    return sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)


@pytest.fixture
def tiny_model(_tiny_model_and_tokenizer):
    """A fresh copy per test, so tests that train or freeze cannot leak into each other."""
    return copy.deepcopy(_tiny_model_and_tokenizer[0])


@pytest.fixture
def tiny_tokenizer(_tiny_model_and_tokenizer):
    return _tiny_model_and_tokenizer[1]


@pytest.fixture(scope="session")
def _bundled_model_and_tokenizer():
    torch.manual_seed(0)
    return sentmtl.load_model_and_tokenizer(None)


@pytest.fixture
def bundled_model(_bundled_model_and_tokenizer):
    return copy.deepcopy(_bundled_model_and_tokenizer[0])


@pytest.fixture
def bundled_tokenizer(_bundled_model_and_tokenizer):
    return _bundled_model_and_tokenizer[1]


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, tiny_encoder_dir):
    """A tiny model trained by run_mtl.py on the synthetic rows (classification + sentiment + distillation), once for
    the session: several tests read it, none writes to it. Its teacher vectors and probe verdicts stay in the
    session's temporary folder, as the per-test fixtures above keep them in each test's."""
    import sentmtl.data.teacher_cache
    import sentmtl.serving.precision
    from sentmtl.training.run import main

    tmp = tmp_path_factory.mktemp("trained")
    csv = tmp / "train.csv"
    rows = synthetic_rows(64)
    csv.write_text(
        "text,sentiment\n"
        + "".join(f"{s},{['negative', 'positive'][label]}\n" for s, label in zip(rows["sentence"], rows["label"]))
    )
    out = tmp / "model"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sentmtl.data.teacher_cache, "default_cache_dir", lambda: tmp / "teacher_cache")
        patch.setattr(sentmtl.serving.precision, "probe_cache_dir", lambda: tmp / "bf16_probe")
        assert main(tiny_run_flags(tiny_encoder_dir, csv, out)) == 0
    return out


# Five tasks, four with a head: the ONNX graph's outputs.
ONNX_TASKS = [
    {"name": "tone", "type": "classification", "labels": ["neg", "mid", "pos"]},
    {"name": "sentiment", "type": "score"},
    {"name": "tags", "type": "multilabel", "labels": ["food", "movie"]},
    {"name": "stars", "type": "regression"},
    {"name": "sts", "type": "similarity"},
]


@pytest.fixture(scope="session")
def exported(tiny_encoder_dir, tmp_path_factory):
    """A tiny 5-task model (4 heads) with trained-looking heads, exported once: (model, tokenizer, onnx folder).
    Needs the onnx extra (the test files that use it skip without it)."""
    from sentmtl.serving.onnx_export import export_onnx

    torch.manual_seed(1)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=ONNX_TASKS, matryoshka_dims=[16, 8]
    )
    with torch.no_grad():  # heads far from their zero-ish start, so a wrong head or order would show
        for task in ("tone", "sentiment", "tags", "stars"):
            getattr(model, f"{task}_head").weight.normal_(0, 2.0)
    out = export_onnx(model, tokenizer, tmp_path_factory.mktemp("onnx"))
    return model, tokenizer, out


@pytest.fixture
def embed_flags(tiny_model, tiny_tokenizer, tmp_path):
    """A saved tiny sentmtl checkpoint (embedding size 16): run_embed loads it with fixed weights."""
    checkpoint = tmp_path / "checkpoint"
    tiny_model.save_pretrained(checkpoint)
    tiny_tokenizer.save_pretrained(checkpoint)
    return ["--model_name_or_path", str(checkpoint)]


# -- data -------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The UCI corpus beside the project (never committed into it); SENTMTL_DATA_DIR overrides."""
    default = REPO_ROOT.parent / "shared" / "data" / "sentiment_labelled_sentences"
    path = Path(os.environ.get("SENTMTL_DATA_DIR", default))
    if not (path / "imdb_labelled.txt").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the corpus at {path} (set SENTMTL_DATA_DIR)")
        pytest.skip(f"corpus not found at {path}")
    return path


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory):
    """The real corpus, built into a cache of the module's own."""
    from sentmtl.data.corpus import load_sentiment_corpus

    return load_sentiment_corpus(data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture
def synthetic_csv(tmp_path) -> Path:
    import csv

    path = tmp_path / "train.csv"
    rows = synthetic_rows(64)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "sentiment"])
        for sentence, label in zip(rows["sentence"], rows["label"]):
            writer.writerow([sentence, ["negative", "positive"][label]])
    return path


@pytest.fixture
def retrieval_files(tmp_path):
    """Retrieval pairs to train on and to evaluate, distractor sentences, and a labelled file for a task beside."""
    train = write_dict_csv(tmp_path / "pairs_train.csv", pair_rows(60, 0))
    dev = write_dict_csv(tmp_path / "pairs_dev.csv", pair_rows(24, 1))
    dev_rows = pair_rows(24, 1)
    distractors = write_dict_csv(
        tmp_path / "distractors.csv",
        [{"sentence": f"this {t} is {w} ."} for t in TOPICS for w in POSITIVE_WORDS]
        + [{"sentence": dev_rows[0]["anchor"]}],
    )  # a dev anchor: left out
    rows = synthetic_rows(48)
    labelled = write_dict_csv(
        tmp_path / "labelled.csv",
        [
            {"sentence": s, "label": ["negative", "positive"][label]}
            for s, label in zip(rows["sentence"], rows["label"])
        ],
    )
    return {"train": train, "dev": dev, "distractors": distractors, "labelled": labelled, "dev_rows": dev_rows}


@pytest.fixture
def stream_files(tmp_path):
    """160 labelled rows to stream and 40 to evaluate on."""
    rows = synthetic_rows(200)
    labelled = [(s, ["negative", "positive"][label]) for s, label in zip(rows["sentence"], rows["label"])]
    train = write_csv(tmp_path / "train.csv", ("sentence", "label"), labelled[:160])
    dev = write_csv(tmp_path / "dev.csv", ("sentence", "label"), labelled[160:])
    return train, dev


# -- runs -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load a model fails the test: validation must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were validated")

    monkeypatch.setattr("sentmtl.training.run.build_model", forbidden)
    monkeypatch.setattr("sentmtl.serving.loading.load_model_and_tokenizer", forbidden)


def _sentinel_handler(signum, frame):  # pragma: no cover - never called: it only marks what was installed before
    raise AssertionError("the sentinel handler ran")


@pytest.fixture
def known_handlers():
    """SIGINT and SIGTERM set to a handler of the test's own before the run, and put back after: a test that asks
    whether the run gave the handlers back must not depend on what the shell that started pytest passed down (a
    background job starts with SIGINT ignored)."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in saved:
        signal.signal(signum, _sentinel_handler)
    yield _sentinel_handler
    for signum, handler in saved.items():
        signal.signal(signum, handler)
