"""sentmtl/serving/unpadded.py: flattened batches pool to the padded batch's vectors, and `encode(unpadded=True)`
refuses in one line what cannot run. Flash attention needs CUDA and flash-attn, so the path is checked on the CPU
with transformers' SDPA attention, which reads the same flattened layout from `position_ids` (a block-diagonal mask),
and the real switch of every layer to a registered CPU stand-in for the varlen kernel; only flash-attn's kernels are
left to a GPU run (benchmarks/gpu_check.py)."""

import numpy as np
import pytest
import torch
from helpers import ONNX_SENTENCES as SENTENCES  # lengths that differ a lot
from transformers import RobertaConfig, RobertaModel

import sentmtl
from sentmtl.model.modeling_parts import Pooling
from sentmtl.serving import embed as embed_module
from sentmtl.serving import unpadded
from sentmtl.serving.embed_cli import main

BATCH = [[2, 5, 6, 7, 3], [2, 9, 3], [2, 4, 4, 4, 4, 4, 3], [2, 3]]


def padded(batch, pad_id=0):
    width = max(map(len, batch))
    ids = torch.full((len(batch), width), pad_id)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for row, sentence in enumerate(batch):
        ids[row, : len(sentence)], mask[row, : len(sentence)] = torch.tensor(sentence), 1
    return ids, mask


def test_flatten_ids_is_transformers_flattening_layout():
    input_ids, position_ids, cu_seq_lens, longest = unpadded.flatten_ids(BATCH)
    assert input_ids.tolist() == [[t for sentence in BATCH for t in sentence]]
    assert position_ids.tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 0, 1]]
    assert cu_seq_lens.tolist() == [0, 5, 8, 15, 17] and longest == 7
    assert unpadded.flatten_ids([[7, 8]], position_start=2)[1].tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="at least one token"):
        unpadded.flatten_ids([[1], []])


@pytest.mark.parametrize("mode", ["mean", "cls"])
def test_pooling_a_flattened_batch_gives_the_padded_batchs_vectors(mode):
    """Hand-made token states: each sentence's span of the row is the unpadded part of its padded row."""
    torch.manual_seed(0)
    ids, mask = padded(BATCH)
    states = torch.randn(*ids.shape, 8)
    states[mask == 0] = 1e3  # padding must not count
    flat = states[mask.bool()]  # [17, 8]: the rows' real tokens, in order
    cu_seq_lens = torch.from_numpy(unpadded.flatten_ids(BATCH)[2])
    expected = Pooling(mode)(states, mask)
    torch.testing.assert_close(unpadded.pool_flattened(flat[None], cu_seq_lens, mode), expected)
    half = unpadded.pool_flattened(flat.bfloat16(), cu_seq_lens, mode)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, Pooling(mode)(states.bfloat16(), mask).float())
    with pytest.raises(ValueError, match="pooling='pooler' has no unpadded form"):
        unpadded.pool_flattened(flat, cu_seq_lens, "pooler")


def test_a_flattened_forward_embeds_as_the_padded_one(tiny_model):
    ids, mask = padded(BATCH)
    inputs = unpadded.flattened_inputs(BATCH, unpadded.position_start(tiny_model.encoder), "cpu")
    with torch.inference_mode():
        for pooled in (False, True):
            expected = (tiny_model.pool if pooled else tiny_model.embed)(ids, mask)
            got = unpadded.embed_flattened(tiny_model.eval(), *inputs, pooled=pooled)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_roberta_positions_start_after_the_padding_index():
    config = RobertaConfig(
        vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=20, pad_token_id=1
    )
    torch.manual_seed(0)
    encoder = RobertaModel(config, add_pooling_layer=False).eval()
    assert unpadded.position_start(encoder) == 2
    ids, mask = padded(BATCH, pad_id=1)
    input_ids, position_ids, cu_seq_lens, _ = unpadded.flattened_inputs(BATCH, 2, "cpu")
    with torch.no_grad():
        expected = Pooling("mean")(encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        flat = encoder(input_ids=input_ids, position_ids=position_ids).last_hidden_state
    torch.testing.assert_close(unpadded.pool_flattened(flat, cu_seq_lens, "mean"), expected, atol=1e-5, rtol=1e-5)


def test_encode_unpadded_matches_padded_where_its_checks_pass(tiny_model, tiny_tokenizer, monkeypatch):
    """The whole `encode(unpadded=True)` loop, with the checks and the switch to flash attention stubbed (this CPU
    has neither CUDA nor flash-attn): SDPA reads the flattened batches, the rows come back in input order."""
    switched = []
    monkeypatch.setattr(embed_module, "check_unpadded", lambda *args: None)
    monkeypatch.setattr(embed_module, "flash_attention", lambda model: switched.append(model) or _nothing())
    expected = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=2, precision="fp32")
    got = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=2, precision="fp32", unpadded=True)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert switched == [tiny_model]
    short = sentmtl.encode(
        tiny_model, SENTENCES, tiny_tokenizer, batch_size=2, precision="bf16-weights", unpadded=True, truncate_dim=8
    )
    np.testing.assert_allclose(np.linalg.norm(short, axis=1), 1.0, rtol=1e-5)


def _register_varlen_stand_in(calls: list) -> str:
    """A CPU stand-in for flash-attn's variable-length kernel, registered as an attention implementation: attention
    within each span of `cu_seq_lens_q` only, no mask (as flash's). Named without "flash", or transformers would look
    for a real kernel."""
    import torch.nn.functional as F
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    def varlen(module, query, key, value, attention_mask, scaling=None, dropout=0.0, cu_seq_lens_q=None, **kwargs):
        calls.append(attention_mask is None and cu_seq_lens_q is not None)
        out = torch.empty_like(query)  # [batch, heads, tokens, dim]
        bounds = cu_seq_lens_q.tolist()
        for start, end in zip(bounds[:-1], bounds[1:]):
            span = slice(start, end)
            out[:, :, span] = F.scaled_dot_product_attention(
                query[:, :, span], key[:, :, span], value[:, :, span], scale=scaling
            )
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("sentmtl_test_varlen", varlen)
    AttentionMaskInterface.register("sentmtl_test_varlen", flash_attention_mask)
    return "sentmtl_test_varlen"


def test_every_layer_of_a_model_built_from_an_encoder_switches_to_the_varlen_kernel(
    tiny_model, tiny_tokenizer, monkeypatch
):
    """Found in review: a model built from a plain encoder (the bundled one, a run's own) gave its encoder the
    model's config object, but its layers kept the one they were built with; switching to flash attention reached the
    encoder (whose mask for flash is none) and not the layers, which ran SDPA unmasked over the whole flattened row:
    every sentence attended to its batch-mates (cosine 0.6–0.9 to the padded path), silently. Here the real switch
    runs, to a registered stand-in for the varlen kernel: each layer must call it, with the boundaries, and the
    embeddings must be the padded path's."""
    calls = []
    monkeypatch.setattr(unpadded, "FLASH_ATTENTION", _register_varlen_stand_in(calls))
    monkeypatch.setattr(embed_module, "check_unpadded", lambda *args: None)  # no CUDA, no flash-attn here
    expected = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=2, precision="fp32")
    got = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, batch_size=2, precision="fp32", unpadded=True)
    layers = tiny_model.config.encoder_config.num_hidden_layers
    assert len(calls) == layers * 3 and all(calls)  # 6 sentences in batches of 2: 3 batches
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert {m.config._attn_implementation for m in tiny_model.encoder.modules() if hasattr(m, "config")} == {"sdpa"}


def test_a_layer_that_does_not_switch_is_refused(tiny_model, tiny_tokenizer, monkeypatch):
    """transformers only logs a warning where a class cannot switch (remote code): a layer left on its old
    implementation would attend across the flattened sentences, so the call is refused, and the model switched back."""
    monkeypatch.setattr(unpadded, "FLASH_ATTENTION", _register_varlen_stand_in([]))
    monkeypatch.setattr(embed_module, "check_unpadded", lambda *args: None)
    layer = tiny_model.encoder.encoder.layer[0].attention.self
    monkeypatch.setattr(
        layer, "config", type(tiny_model.config.encoder_config)(**tiny_model.config.encoder_config.to_dict())
    )
    with pytest.raises(ValueError, match=r"^unpadded=True: BertModel did not switch every layer to sentmtl_test_varl"):
        sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp32", unpadded=True)
    assert tiny_model.config.encoder_config._attn_implementation == "sdpa"


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_missing_flash_attn_is_one_line_naming_the_install(tiny_model, tiny_tokenizer, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "flash_attn", None)  # not importable, whatever is installed
    with pytest.raises(
        ImportError, match=r"^unpadded batches need flash-attn .*pip install flash-attn --no-build-isol"
    ):
        sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="bf16-weights", unpadded=True)


@pytest.fixture
def flash_attn_importable(monkeypatch):
    monkeypatch.setattr(unpadded, "require_flash_attn", lambda: None)


def test_an_encoder_without_flash_attention_is_named(tiny_model, tiny_tokenizer, monkeypatch):
    monkeypatch.setattr(type(tiny_model.encoder), "_supports_flash_attn", False)
    with pytest.raises(ValueError, match=r"^unpadded batches need flash attention, .* for BertModel \(bert\)"):
        sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="bf16-weights", unpadded=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "bf16-weights"}, "needs a CUDA GPU; the model is on cpu"),
        ({"precision": "bf16-weights", "compile": True}, "compile=True is for padded batches"),
    ],
)
def test_what_unpadded_cannot_run_is_refused_in_one_line(
    tiny_model, tiny_tokenizer, flash_attn_importable, kwargs, message
):
    with pytest.raises(ValueError, match=message) as error:
        sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, unpadded=True, **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_unpadded_needs_a_weights_precision(tiny_model, flash_attn_importable, precision):
    with pytest.raises(ValueError, match=f"precision={precision!r}: flash attention runs fp16 / bf16 only"):
        unpadded.check_unpadded(tiny_model, torch.device("cuda"), precision, compile=False)
    unpadded.check_unpadded(tiny_model, torch.device("cuda"), "fp16-weights", compile=False)  # all it needs


def test_pooler_pooling_is_refused_unpadded(tiny_encoder_dir, flash_attn_importable):
    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, pooling="pooler")
    with pytest.raises(ValueError, match="pooling='pooler' reads the encoder's pooler"):
        unpadded.check_unpadded(model, torch.device("cuda"), "bf16-weights", compile=False)


def test_the_attention_implementation_is_switched_back(tiny_model, monkeypatch):
    """Every layer, after a failed batch too (the switch is real, to a registered stand-in for the varlen kernel)."""
    monkeypatch.setattr(unpadded, "FLASH_ATTENTION", _register_varlen_stand_in([]))
    before = tiny_model.config.encoder_config._attn_implementation
    with pytest.raises(RuntimeError):
        with unpadded.flash_attention(tiny_model):
            assert tiny_model.encoder.encoder.layer[0].attention.self.config._attn_implementation != before
            raise RuntimeError("a failed batch")
    assert {m.config._attn_implementation for m in tiny_model.encoder.modules() if hasattr(m, "config")} == {before}


def test_unpadded_must_be_a_bool(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="unpadded='yes': give True or False"):
        sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, unpadded="yes")


def test_run_embed_unpadded_without_flash_attn(embed_flags, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "flash_attn", None)
    assert main([*embed_flags, "--precision", "bf16-weights", "--unpadded", "the film was good ."]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the weights' loading bar
    assert error.startswith("run_embed.py: error: unpadded batches need flash-attn (")
    assert "pip install flash-attn --no-build-isolation" in error


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--unpadded", "--compile"], "--unpadded runs eagerly; --compile is for padded batches"),
        (["--unpadded", "--export_onnx", "out"], "--unpadded applies when embedding"),
        (["--unpadded", "--export_sentence_transformer", "out"], "--unpadded applies when embedding"),
        (["--unpadded", "--backend", "onnx", "--model_name_or_path", "x"], "--backend onnx takes padded batches"),
    ],
)
def test_run_embed_refuses_unpadded_where_it_cannot_apply(flags, message, capsys):
    with pytest.raises(SystemExit):
        main(flags)
    assert message in capsys.readouterr().err
