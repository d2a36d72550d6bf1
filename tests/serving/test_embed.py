"""sentmtl/serving/embed.py: `encode` returns unit rows in input order, from a model or a folder, and leaves the
model's mode and tensors as they were."""

import numpy as np
import torch

import sentmtl

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


def test_encode_moves_the_model_outside_inference_mode(tiny_model, tiny_tokenizer):
    """Issue #20, item 12, found on the GPU: the teacher's `encode(device=cuda)` moved the model inside inference
    mode, its parameters became inference tensors, and the first training step failed ("Inference tensors cannot be
    saved for backward")."""
    seen = []
    move = tiny_model.to
    tiny_model.to = lambda *a, **k: seen.append(torch.is_inference_mode_enabled()) or move(*a, **k)
    sentmtl.encode(tiny_model, ["the film was good ."], tiny_tokenizer, device="cpu")
    assert seen == [False]
    assert not any(p.is_inference() for p in tiny_model.parameters())
