"""ONNX exports made by the test itself, each a torch.onnx export of several seconds (sentmtl/serving/onnx_export.py,
run_embed.py --export_onnx / --backend onnx): a large regression head, a failed export that leaves the previous one
whole, and the command line's export embedded with every variant. The checks on one shared export are in
tests/serving/test_onnx_export.py and test_onnx_runtime.py."""

import numpy as np
import pytest
import torch
from helpers import ONNX_SENTENCES, cosine, skip_without_onnx, torch_outputs

import sentmtl
from sentmtl.serving.onnx_export import FILES, export_onnx
from sentmtl.serving.onnx_runtime import OnnxSentMtl

skip_without_onnx()  # the optional extra: the whole module skips without it (CI installs it)


def test_a_large_regression_head_exports(tiny_encoder_dir, tmp_path):
    """The parity check is relative for large values: fp32 rounding of a head predicting ~1e4 is not an export bug."""
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[{"name": "price", "type": "regression"}]
    )
    with torch.no_grad():
        model.price_head.weight.normal_(0, 3e3)
        model.price_head.bias.fill_(2e4)
    out = export_onnx(model, tokenizer, tmp_path / "x", quantize=False)
    got = OnnxSentMtl.from_pretrained(out, "fp32").predict(ONNX_SENTENCES)["price"]
    assert np.abs(got).min() > 1e3
    np.testing.assert_allclose(got, torch_outputs(model, tokenizer, ONNX_SENTENCES)["price"], rtol=1e-4)


def test_a_failed_export_leaves_the_previous_one_whole(exported, tmp_path, monkeypatch):
    import sentmtl.serving.onnx_export

    model, tokenizer, _ = exported
    out = export_onnx(model, tokenizer, tmp_path / "onnx", quantize=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with torch.no_grad():
        model.tone_head.bias.add_(1.0)  # a different model, whose export then fails its check
    try:
        monkeypatch.setattr(
            sentmtl.serving.onnx_export, "check_parity", lambda *a: (_ for _ in ()).throw(RuntimeError("boom"))
        )
        with pytest.raises(RuntimeError, match="boom"):
            export_onnx(model, tokenizer, out, quantize=False)
    finally:
        with torch.no_grad():
            model.tone_head.bias.sub_(1.0)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]  # no staging folder left behind


def test_run_embed_exports_and_embeds_with_the_onnx_backend(exported, tmp_path, capsys):
    import run_embed

    model, tokenizer, _ = exported
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert run_embed.main(["--model_name_or_path", str(model_dir), "--export_onnx", str(model_dir / "onnx")]) == 0
    assert "--backend onnx" in capsys.readouterr().out
    sentences = tmp_path / "in.txt"
    sentences.write_text("\n".join(ONNX_SENTENCES) + "\n")
    for variant in FILES:
        output = tmp_path / f"{variant}.npy"
        assert (
            run_embed.main(
                [
                    "--model_name_or_path",
                    str(model_dir),
                    "--backend",
                    "onnx",
                    "--onnx_variant",
                    variant,
                    "--input_file",
                    str(sentences),
                    "--output_file",
                    str(output),
                ]
            )
            == 0
        )
        want = OnnxSentMtl.from_pretrained(model_dir, variant).encode(ONNX_SENTENCES)
        np.testing.assert_allclose(np.load(output), want, atol=1e-6)
    torch_path = sentmtl.encode(model, ONNX_SENTENCES, tokenizer, precision="fp32")
    assert cosine(np.load(tmp_path / "fp32.npy"), torch_path).min() >= 0.9999
