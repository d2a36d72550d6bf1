"""Shared fixtures: a tiny random BERT (fast tests), the real bundled encoder (a few tests), the real corpus."""

import copy
import os
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizer

import sentmtl

# A vocabulary the tests write themselves: enough words for the synthetic sentences below.
TINY_VOCAB = (
    "[PAD] [UNK] [CLS] [SEP] [MASK] . ! , the a it this was is i and not very really "
    "good great love excellent wonderful happy best fine "
    "bad awful hate terrible worst boring poor broken "
    "movie film plot food service phone place battery acting story"
).split()

POSITIVE_WORDS = ["good", "great", "love", "excellent", "wonderful", "happy", "best", "fine"]
NEGATIVE_WORDS = ["bad", "awful", "hate", "terrible", "worst", "boring", "poor", "broken"]
TOPICS = ["movie", "film", "plot", "food", "service", "phone", "place", "battery", "acting", "story"]

REPO_ROOT = Path(__file__).resolve().parent.parent


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
def data_dir() -> Path:
    """The UCI corpus beside the project (never committed into it); SENTMTL_DATA_DIR overrides."""
    default = REPO_ROOT.parent / "shared" / "data" / "sentiment_labelled_sentences"
    path = Path(os.environ.get("SENTMTL_DATA_DIR", default))
    if not (path / "imdb_labelled.txt").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the corpus at {path} (set SENTMTL_DATA_DIR)")
        pytest.skip(f"corpus not found at {path}")
    return path


def synthetic_rows(n: int, seed: int = 0) -> dict:
    """Sentences whose sentiment is carried by one word of the tiny vocabulary: learnable in a few steps."""
    import random

    rng = random.Random(seed)
    rows = {"sentence": [], "label": []}
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS)
        rows["sentence"].append(f"the {rng.choice(TOPICS)} was {rng.choice(['', 'very ', 'really '])}{word} .")
        rows["label"].append(label)
    return rows


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


def tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *extra) -> list[str]:
    """run_mtl.py flags for a seconds-long run: the tiny encoder on the synthetic CSV, 2 epochs."""
    return [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--train_file",
        str(synthetic_csv),
        "--text_column",
        "text",
        "--label_column",
        "sentiment",
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        *extra,
    ]
