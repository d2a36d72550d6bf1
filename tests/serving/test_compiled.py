"""sentmtl/serving/compiled.py: `encode(..., compile=True)` matches the uncompiled embeddings with one graph for every
batch length, keeps its compiled forwards on the model (reused by later calls, not taken by a copy), and
`run_embed.py --compile` refuses what it cannot honour."""

import copy
import pickle

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

import sentmtl
from sentmtl.serving import compiled
from sentmtl.serving.embed_cli import main

# 40 sentences of 3 to 30 tokens: batches of 8 padded to many lengths, the last one shorter.
SENTENCES = [f"the movie was {'very ' * (i % 27)}good ." if i % 3 else "bad" for i in range(40)]


def test_compiled_encode_matches_eager_with_one_graph(tiny_model, tiny_tokenizer):
    torch._dynamo.reset()
    counters.clear()
    eager = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=8, precision="fp32")
    first = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=8, precision="fp32", compile=True)
    assert counters["stats"]["unique_graphs"] == 1  # 5 batches of 4 lengths, and a shorter one
    cosines = (eager * first).sum(axis=1) / np.linalg.norm(eager, axis=1) / np.linalg.norm(first, axis=1)
    assert cosines.min() >= 0.999
    np.testing.assert_allclose(first, eager, atol=1e-5)
    again = sentmtl.encode(tiny_model, SENTENCES[:5], tiny_tokenizer, batch_size=8, precision="fp32", compile=True)
    assert counters["stats"]["unique_graphs"] == 1  # the kept graph served the new lengths
    np.testing.assert_allclose(again, first[:5], atol=1e-6)


@pytest.fixture
def counted_compiles(monkeypatch):
    """torch.compile with the `eager` backend (what is compiled and kept, not the kernels), counting its calls."""
    calls = []
    real = torch.compile

    def compile_(fn, **kwargs):
        calls.append(fn)
        return real(fn, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(compiled.torch, "compile", compile_)
    return calls


def test_compiled_forwards_are_kept_on_their_model_only(tiny_model, tiny_tokenizer, counted_compiles):
    keys = set(tiny_model.state_dict())
    sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, compile=True)
    sentmtl.encode(tiny_model, SENTENCES[:3], tiny_tokenizer, compile=True)
    assert len(counted_compiles) == 1  # kept and reused
    sentmtl.encode(tiny_model, SENTENCES[:3], tiny_tokenizer, pooled=True, compile=True)
    assert len(counted_compiles) == 2  # `pool` is a forward of its own
    assert set(tiny_model.state_dict()) == keys  # nothing is added to the weights
    # A copy has weights of its own: it compiles its own forwards rather than embed with the original's.
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.shared_projection.weight.mul_(-1)
    mine = sentmtl.encode(tiny_model, SENTENCES[:3], tiny_tokenizer, compile=True)
    theirs = sentmtl.encode(other, SENTENCES[:3], tiny_tokenizer, compile=True)
    np.testing.assert_allclose(theirs, sentmtl.encode(other, SENTENCES[:3], tiny_tokenizer), atol=1e-6)
    assert not np.allclose(mine, theirs)
    assert len(counted_compiles) == 3
    pickle.loads(pickle.dumps(tiny_model))  # the kept forwards do not travel in a pickle


def test_compile_must_be_a_bool(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="compile='yes': give True or False"):
        sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, compile="yes")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--backend", "onnx", "--model_name_or_path", "x"], "--compile compiles the torch model; --backend onnx"),
        (["--export_onnx", "out"], "--compile applies when embedding; an export writes the model's weights"),
        (["--export_sentence_transformer", "out"], "--compile applies when embedding"),
    ],
)
def test_run_embed_refuses_compile_where_it_cannot_apply(flags, message, capsys):
    with pytest.raises(SystemExit):
        main(["--compile", *flags])
    assert message in capsys.readouterr().err


def test_run_embed_compiles_when_asked(embed_flags, counted_compiles, capsys):
    assert main([*embed_flags, "--compile", "--device", "cpu", "the film was good .", "bad"]) == 0
    assert len(counted_compiles) == 1 and "size=16" in capsys.readouterr().out
