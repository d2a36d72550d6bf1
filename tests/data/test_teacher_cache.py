"""sentmtl/data/teacher_cache.py: teacher vectors computed once and read back; the key follows the texts, the
weights and every setting (the tokenizer's truncation side too); a corrupt file is rebuilt."""

import logging

import datasets
import numpy as np
import pytest
import torch
from helpers import counting_teacher, texts_table

from sentmtl.data.teacher_cache import teacher_encoder, teacher_vectors


def test_teacher_vectors_are_cached_and_read_back(tmp_path):
    teacher = counting_teacher()
    first = teacher_vectors(texts_table(20), "text", teacher, tmp_path, chunk_size=8)
    assert teacher.calls == [8, 8, 4]  # computed in chunks: memory bounded by a chunk
    assert first.cache_files and first.cache_files[0]["filename"].startswith(str(tmp_path))  # memory-mapped, on disk
    again = teacher_vectors(texts_table(20), "text", teacher, tmp_path, chunk_size=8)
    assert teacher.calls == [8, 8, 4]  # a hit: nothing embedded
    expected = teacher.encode([f"sentence number {i} ." for i in range(8)])
    np.testing.assert_array_equal(np.asarray(again["vectors"][:8], dtype=np.float32), expected)
    assert again.features["vectors"] == datasets.List(datasets.Value("float32"), length=4)


def test_a_changed_text_or_teacher_is_a_miss(tmp_path):
    teacher = counting_teacher()
    teacher_vectors(texts_table(5), "text", teacher, tmp_path)
    teacher_vectors(texts_table(5, offset=1), "text", teacher, tmp_path)  # other texts
    teacher_vectors(texts_table(5), "text", counting_teacher(key="other weights"), tmp_path)
    assert teacher.calls == [5, 5]
    assert len(list(tmp_path.glob("*.arrow"))) == 3


def test_the_key_follows_the_encoder_weights_and_settings(tiny_model, tiny_tokenizer):
    def key(model, max_length=32, precision="fp32"):
        return teacher_encoder(model, tiny_tokenizer, None, max_length, precision=precision).key

    same = key(tiny_model)
    assert key(tiny_model) == same
    assert key(tiny_model, max_length=16) != same
    assert key(tiny_model, precision="bf16") != same
    tiny_tokenizer("a call sets the fast tokenizer's truncation state", truncation=True, max_length=8)
    assert key(tiny_model) == same  # the tokenizer's call-time state is not part of the key
    with torch.no_grad():
        next(tiny_model.encoder.parameters()).add_(1e-3)
    assert key(tiny_model) != same


def test_a_fresh_lora_model_shares_the_plain_models_key(tiny_encoder_dir):
    """Its adapters add nothing until trained (B = 0): the same teacher vectors, so the same cache entry."""
    import sentmtl

    plain, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
    adapted, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    assert teacher_encoder(adapted, tokenizer, None, 32).key == teacher_encoder(plain, tokenizer, None, 32).key


def test_the_key_follows_the_side_the_tokenizer_truncates(tiny_model, tiny_tokenizer):
    """Issue 31, finding 4: a left-truncating tokenizer got the right-truncated vectors (and token ids) cached before."""
    import copy

    from sentmtl.utils.fingerprints import tokenizer_fingerprint

    left = copy.deepcopy(tiny_tokenizer)
    left.truncation_side = "left"
    long_text = "the movie was good and the food was bad and the phone was fine " * 4
    assert (
        left(long_text, truncation=True, max_length=8)["input_ids"]
        != tiny_tokenizer(long_text, truncation=True, max_length=8)["input_ids"]
    )  # the two keep other tokens: one cache entry cannot serve both
    assert tokenizer_fingerprint(left) != tokenizer_fingerprint(tiny_tokenizer)  # the token cache's key
    keys = {teacher_encoder(tiny_model, t, None, 8, precision="fp32").key for t in (tiny_tokenizer, left)}
    assert len(keys) == 2  # the teacher vectors' key


@pytest.mark.parametrize("damage", ["truncate", "flip", "record"])
def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    teacher = counting_teacher()
    good = np.asarray(teacher_vectors(texts_table(30), "text", teacher, tmp_path)["vectors"])
    (arrow,) = tmp_path.glob("*.arrow")
    data = arrow.read_bytes()
    if damage == "truncate":
        arrow.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        arrow.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:
        arrow.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING, logger="sentmtl.data.teacher_cache"):
        rebuilt = teacher_vectors(texts_table(30), "text", teacher, tmp_path)
    assert "unreadable" in caplog.text and "rebuilding" in caplog.text
    assert len(teacher.calls) == 2  # computed again
    np.testing.assert_array_equal(np.asarray(rebuilt["vectors"]), good)
