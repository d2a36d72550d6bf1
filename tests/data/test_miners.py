"""sentmtl/data/miners.py: a plain encoder (or a run starting from one) mines with its pooled vector, a sentmtl
checkpoint with its embedding; the key follows the weights and which vector."""

import numpy as np

from sentmtl.data.miners import Miners, miner_encoder
from sentmtl.serving.embed import encode

SENTENCES = ["the movie was good .", "the food was awful ."]


def test_a_fresh_model_mines_with_the_pooled_vector_and_a_checkpoint_with_its_embedding(
    tiny_model, tiny_tokenizer, tiny_encoder_dir, tmp_path
):
    start = miner_encoder(tiny_model, tiny_tokenizer, None, 32)
    pooled = encode(tiny_model, SENTENCES, tiny_tokenizer, pooled=True, precision="fp32", prompt="")
    np.testing.assert_allclose(start.encode(SENTENCES), pooled, rtol=1e-5, atol=1e-6)
    assert start.own_model and "pooled encoder" in start.name
    named = miner_encoder(tiny_model, tiny_tokenizer, str(tiny_encoder_dir), 32)  # a plain encoder by its path
    assert not named.own_model and named.encode(SENTENCES).shape == (2, 32)
    assert named.key == start.key  # the same encoder weights, the same vector: one cache entry
    tiny_model.save_pretrained(tmp_path / "checkpoint")
    tiny_tokenizer.save_pretrained(tmp_path / "checkpoint")
    trained = miner_encoder(tiny_model, tiny_tokenizer, str(tmp_path / "checkpoint"), 32)
    embedded = encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp32", prompt="")
    np.testing.assert_allclose(trained.encode(SENTENCES), embedded, rtol=1e-5, atol=1e-6)
    assert "sentmtl embedding" in trained.name and trained.key != start.key


def test_the_miners_are_built_once_and_the_key_follows_settings(tiny_model, tiny_tokenizer):
    miners = Miners(tiny_model, tiny_tokenizer, 32, None, "fp32")
    assert miners(None) is miners(None)
    miners.clear()
    assert not miners.built
    keys = {
        miner_encoder(tiny_model, tiny_tokenizer, None, length, precision=precision).key
        for length, precision in ((32, "fp32"), (16, "fp32"), (32, "bf16"))
    }
    assert len(keys) == 3
