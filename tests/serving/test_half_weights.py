"""sentmtl/serving/half_weights.py: `encode(precision="bf16-weights" | "fp16-weights")` runs the encoder in half
precision for the call only, keeps the pooling's mean, the projection and the normalisation in fp32, and leaves the
caller's model bitwise as it was; what cannot run is refused in one line."""

import numpy as np
import pytest
import torch
from helpers import ONNX_SENTENCES as SENTENCES  # lengths that differ a lot

import sentmtl
from sentmtl.serving import embed as embed_module
from sentmtl.serving import half_weights
from sentmtl.serving.embed_cli import main


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_unchanged(model, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in after.items():
        assert tensor.dtype == before[name].dtype, name
        assert torch.equal(tensor, before[name]), name  # bitwise: a cast to bf16 and back would round them
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert not any(p.is_inference() for p in model.parameters())


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_weights_match_fp32_and_leave_the_model_as_it_was(tiny_model, tiny_tokenizer):
    before = snapshot(tiny_model)
    fp32 = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=2, precision="fp32")
    bf16 = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=2, precision="bf16-weights")
    assert bf16.dtype == np.float32 and bf16.shape == fp32.shape
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, rtol=1e-5)  # normalised in fp32
    assert row_cosines(bf16, fp32).min() >= 0.999
    assert not np.array_equal(bf16, fp32)  # the encoder did run in bf16
    assert_unchanged(tiny_model, before)
    # The model still trains: no half or inference tensor was left behind.
    tiny_model.train()
    ids = torch.tensor([[2, 5, 6, 3]])
    tiny_model.embed(ids, torch.ones_like(ids)).sum().backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in tiny_model.parameters())


def test_the_bundled_encoder_keeps_a_cosine_of_0999_per_row_in_bf16_weights(bundled_model, bundled_tokenizer):
    sentences = [*SENTENCES, "I would happily eat here again, the staff were lovely and the food was excellent."]
    fp32 = sentmtl.encode(bundled_model, sentences, bundled_tokenizer, precision="fp32")
    bf16 = sentmtl.encode(bundled_model, sentences, bundled_tokenizer, precision="bf16-weights")
    assert row_cosines(bf16, fp32).min() >= 0.999


def test_the_weights_come_back_after_an_error(tiny_model, tiny_tokenizer, monkeypatch):
    before = snapshot(tiny_model)

    def broken(*args, **kwargs):
        assert next(tiny_model.encoder.parameters()).dtype == torch.bfloat16  # cast while it runs
        assert tiny_model.shared_projection.weight.dtype == torch.float32  # the projection is not the encoder's
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tiny_model, "embed", broken)
    tiny_model.train()  # a model being trained, encoded between steps (a teacher, an evaluation)
    with pytest.raises(RuntimeError, match="out of memory"):
        sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="bf16-weights")
    assert_unchanged(tiny_model, before)
    assert tiny_model.training  # found in review: an error left it in eval mode


def test_tied_and_shared_tensors_are_cast_once_and_restored(tiny_model):
    encoder = tiny_model.encoder
    shared = encoder.embeddings.word_embeddings.weight
    encoder.extra = torch.nn.Linear(1, 1)
    encoder.extra.weight = shared  # a tied weight: one parameter under two names
    before = snapshot(tiny_model)
    with half_weights.half_encoder_weights(tiny_model, torch.float16):
        assert shared.dtype == torch.float16 and encoder.extra.weight is shared
        assert encoder.embeddings.position_ids.dtype == torch.int64  # integer buffers are left alone
    assert_unchanged(tiny_model, before)


def test_computed_buffers_stay_fp32(tiny_model):
    """A non-persistent floating buffer is computed, not loaded (rotary embeddings' inverse frequencies): it stays
    fp32, as in a model loaded in half precision (found in review: bf16 angles drifted 0.025 rad by position 511)."""
    encoder = tiny_model.encoder
    encoder.register_buffer("inv_freq", torch.rand(4), persistent=False)
    encoder.register_buffer("scale", torch.rand(4))  # persistent: a weight like any other
    with half_weights.half_encoder_weights(tiny_model, torch.bfloat16):
        assert encoder.inv_freq.dtype == torch.float32 and encoder.scale.dtype == torch.bfloat16
    assert encoder.scale.dtype == torch.float32


@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_every_pooling_gives_fp32_vectors_near_fp32(tiny_encoder_dir, tiny_tokenizer, pooling):
    torch.manual_seed(0)
    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, pooling=pooling)
    for pooled in (False, True):
        fp32 = sentmtl.encode(model, SENTENCES, tiny_tokenizer, precision="fp32", pooled=pooled)
        bf16 = sentmtl.encode(model, SENTENCES, tiny_tokenizer, precision="bf16-weights", pooled=pooled)
        assert bf16.dtype == np.float32
        assert row_cosines(bf16, fp32).min() >= 0.999, (pooling, pooled)


def test_the_mean_is_taken_in_fp32(tiny_model):
    """bf16 token states are averaged in fp32: 1/3 rounded to bf16 would be 2^-9 off."""
    states = torch.ones(1, 3, 4, dtype=torch.bfloat16)
    pooled = tiny_model.pooling(states, torch.ones(1, 3, dtype=torch.long))
    assert pooled.dtype == torch.float32 and torch.equal(pooled, torch.ones(1, 4))


def test_truncate_dim_and_prompts_work_with_bf16_weights(tiny_model, tiny_tokenizer):
    full = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="bf16-weights", prompt="query : ")
    short = sentmtl.encode(
        tiny_model, SENTENCES, tiny_tokenizer, precision="bf16-weights", prompt="query : ", truncate_dim=8
    )
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(short, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-6)
    fp32 = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp32", prompt="query : ")
    assert row_cosines(full, fp32).min() >= 0.999


def test_compiled_bf16_weights_match_eager_and_leave_the_model_as_it_was(tiny_model, tiny_tokenizer):
    before = snapshot(tiny_model)
    eager = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="bf16-weights")
    compiled = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="bf16-weights", compile=True)
    assert row_cosines(compiled, eager).min() >= 0.999
    assert_unchanged(tiny_model, before)
    # The fp32 call after it gets fp32 weights again (a graph of its own, not the bf16 one).
    fp32 = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp32", compile=True)
    np.testing.assert_allclose(fp32, sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp32"), atol=1e-5)


def test_fp16_weights_are_refused_on_a_cpu_in_one_line(tiny_model, tiny_tokenizer):
    before = snapshot(tiny_model)
    for sentences in (SENTENCES, []):  # refused before an empty input returns, too
        with pytest.raises(ValueError, match=r"^precision='fp16-weights' is for GPUs[^\n]*bf16-weights[^\n]*$"):
            sentmtl.encode(tiny_model, sentences, tiny_tokenizer, precision="fp16-weights")
    assert_unchanged(tiny_model, before)


def test_fp16_weights_would_run_on_a_gpu(tiny_model, tiny_tokenizer, monkeypatch):
    """The CPU refusal is the only one: on a CUDA device the same cast runs (its fp16 matmuls are checked here on
    the CPU, where torch has them, with the device check told it is a GPU)."""
    monkeypatch.setattr(embed_module, "check_half_weights", lambda precision, device_type: None)
    before = snapshot(tiny_model)
    fp16 = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp16-weights")
    fp32 = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp32")
    assert row_cosines(fp16, fp32).min() >= 0.999
    assert_unchanged(tiny_model, before)


def test_run_embed_takes_the_weights_precisions(embed_flags, capsys):
    assert main([*embed_flags, "--precision", "bf16-weights", "the film was good ."]) == 0
    assert "norm=1.0000" in capsys.readouterr().out
    assert main([*embed_flags, "--precision", "fp16-weights", "the film was good ."]) == 2
    assert "precision='fp16-weights' is for GPUs" in capsys.readouterr().err


def test_run_embed_refuses_a_weights_precision_with_onnx(capsys):
    with pytest.raises(SystemExit):
        main(["--backend", "onnx", "--model_name_or_path", "x", "--precision", "bf16-weights"])
    assert "--precision bf16-weights applies to --backend torch" in capsys.readouterr().err
