import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT

import sentmtl
from sentmtl.serving.embed_io import read_sentences

SENTENCES = ["the movie was great !", "bad", "the service was really very bad and boring .", "i love this phone"]


def test_encode_returns_unit_rows_in_input_order(tiny_model, tiny_tokenizer):
    embeddings = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=3)
    assert embeddings.dtype == np.float32 and embeddings.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    # Length sorting must be undone: each row equals that sentence embedded alone.
    for sentence, row in zip(SENTENCES, embeddings):
        alone = sentmtl.encode(tiny_model, [sentence], tiny_tokenizer)[0]
        np.testing.assert_allclose(row, alone, atol=1e-5)


def test_encode_from_checkpoint_path(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    np.testing.assert_allclose(
        sentmtl.encode(str(tmp_path), SENTENCES), sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer), atol=1e-6
    )


def test_encode_restores_training_mode(tiny_model, tiny_tokenizer):
    tiny_model.train()
    sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer)
    assert tiny_model.training


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


@pytest.mark.real_encoder
def test_pooled_encoder_matches_sentence_transformers(bundled_model, bundled_tokenizer):
    """Parity with the field's reference implementation: same weights, same mean pooling, same vectors."""
    from sentence_transformers import SentenceTransformer

    from sentmtl.model.encoders import bundled_encoder_path

    sentences = ["The plot twists were unexpected.", "The service was satisfactory.", "Worst phone ever!!", "ok"]
    reference = SentenceTransformer(str(bundled_encoder_path()), device="cpu").encode(sentences)
    bundled_model.eval()
    inputs = bundled_tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        pooled = torch.nn.functional.normalize(
            bundled_model.pool(inputs["input_ids"], inputs["attention_mask"]), dim=-1
        )
    cosine = (pooled.numpy() * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.9999


@pytest.mark.real_encoder
def test_run_embed_writes_unit_rows_offline(tmp_path):
    out = tmp_path / "e.npy"
    result = subprocess.run(
        [
            sys.executable,
            "run_embed.py",
            "The plot twists were unexpected.",
            "The service was satisfactory.",
            "--output_file",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    embeddings = np.load(out)
    assert embeddings.shape == (2, 256) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert "untrained" in result.stderr


@pytest.mark.real_encoder
def test_bf16_embeddings_match_fp32(bundled_model, bundled_tokenizer, data_dir):
    """The fast embedding path loses nothing that matters: cosine >= 0.999 to fp32 on real corpus sentences."""
    sentences = (data_dir / "imdb_labelled.txt").read_text(encoding="utf-8").split("\n")[:200]
    sentences = [line.rsplit("\t", 1)[0] for line in sentences if line.strip()]
    fast = sentmtl.encode(bundled_model, sentences, bundled_tokenizer, precision="bf16")
    exact = sentmtl.encode(bundled_model, sentences, bundled_tokenizer, precision="fp32")
    assert not np.array_equal(fast, exact)  # it really is another path
    assert (fast * exact).sum(axis=1).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)  # normalised in fp32
