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


def test_a_run_continuing_an_adapter_folder_mines_with_its_embedding(tiny_encoder_dir, tmp_path):
    """A LoRA adapter folder is a trained checkpoint too: continued with no `miner`, its embedding ranks the
    candidates, not the encoder's pooled vector (the folder's loader once left the model without its origin)."""
    import sentmtl

    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    continued, tokenizer = sentmtl.load_model_and_tokenizer(str(tmp_path / "adapter"))
    miner = miner_encoder(continued, tokenizer, None, 32)
    assert "sentmtl embedding" in miner.name
    embedded = encode(continued, SENTENCES, tokenizer, precision="fp32", prompt="")
    np.testing.assert_allclose(miner.encode(SENTENCES), embedded, rtol=1e-5, atol=1e-6)


def test_a_named_sentence_transformers_miner_pools_as_it_was_trained(tiny_encoder_dir, tmp_path):
    """A CLS-pooled sentence-transformers model (BGE's kind) named as the miner ranks by its CLS vector, as
    sentence-transformers' mine_hard_negatives would; sentmtl's own default, mean pooling, once ranked in its place."""
    from helpers import st_model_dir

    import sentmtl

    folder = st_model_dir(tmp_path, tiny_encoder_dir, {"pooling_mode": "cls"})
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir))
    miner = miner_encoder(model, tokenizer, str(folder), 32)
    cls_model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), pooling="cls")
    expected = encode(cls_model, SENTENCES, tokenizer, pooled=True, precision="fp32", prompt="")
    np.testing.assert_allclose(miner.encode(SENTENCES), expected, rtol=1e-5, atol=1e-6)
    mean = encode(model, SENTENCES, tokenizer, pooled=True, precision="fp32", prompt="")
    assert not np.allclose(expected, mean)
    assert miner.key != miner_encoder(model, tokenizer, str(tiny_encoder_dir), 32).key


def test_allow_pickle_weights_covers_a_named_miner_and_teacher(tiny_encoder_dir, tmp_path):
    """The refusal of pickle-only weights names --allow_pickle_weights; the run's flag reaches the models it names
    (it once covered the run's own model only, so following the advice changed nothing)."""
    import shutil

    import pytest
    import torch
    from transformers import BertModel

    import sentmtl
    from sentmtl.data.teacher_cache import Teachers

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_encoder_dir, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(BertModel.from_pretrained(tiny_encoder_dir).state_dict(), pickled / "pytorch_model.bin")
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir))
    for kind in (Miners, Teachers):
        with pytest.raises(ValueError, match="--allow_pickle_weights"):
            kind(model, tokenizer, 32, None, "fp32")(str(pickled))
        allowed = kind(model, tokenizer, 32, None, "fp32", allow_pickle_weights=True)(str(pickled))
        assert allowed.encode(SENTENCES).shape[0] == 2


def test_a_fresh_lora_run_mines_from_the_full_runs_cache_entry(tiny_encoder_dir):
    """Fresh adapters (B = 0) leave the pooled vector unchanged, so the key is the plain encoder's: one cache entry
    for the full run and every LoRA seed (their random A matrices once made a new one each)."""
    import sentmtl

    plain, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
    adapted, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    full, lora = miner_encoder(plain, tokenizer, None, 32), miner_encoder(adapted, tokenizer, None, 32)
    assert lora.key == full.key
    np.testing.assert_allclose(lora.encode(SENTENCES), full.encode(SENTENCES), rtol=1e-5, atol=1e-6)
