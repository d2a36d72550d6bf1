"""sentmtl/serving/onnx_export.py, on one shared export (conftest's `exported`): the whole-model graph
(encoder, pooling, projection, normalisation, every head) agrees with torch, int8 quantises the encoder only, task
names that would clash with the graph's are refused, a new save removes a stale export, the missing extra is
refused before training. Exports made in the test itself: tests/e2e/test_onnx_exports.py."""

import sys

import numpy as np
import pytest
from helpers import ONNX_SENTENCES, cosine, model_folder_with_export, skip_without_onnx, tiny_run_flags, torch_outputs

import sentmtl
from sentmtl.serving.onnx_export import FILES, MANIFEST, export_onnx, require_onnx
from sentmtl.serving.onnx_runtime import OnnxSentMtl
from sentmtl.training.arguments import SentMtlTrainingArguments

skip_without_onnx()  # the optional extra: the whole module skips without it (CI installs it)

import onnx  # noqa: E402


def test_fp32_graph_gives_the_embedding_and_every_head(exported):
    model, tokenizer, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*FILES.values(), MANIFEST, "tokenizer.json", "tokenizer_config.json"]
    )
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")
    assert set(runtime.tasks()) == {"tone", "sentiment", "tags", "stars"}  # the similarity task has no head
    assert runtime.tasks()["tone"]["labels"] == ["neg", "mid", "pos"]
    want = torch_outputs(model, tokenizer, ONNX_SENTENCES)
    got = runtime.predict(ONNX_SENTENCES, batch_size=4)  # batched by length: padding, sorting and order restored
    assert cosine(got["embeddings"], want["embeddings"]).min() >= 0.9999
    for name in ("tone", "sentiment", "tags", "stars"):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(got["tone"].sum(1), 1.0, atol=1e-5)  # probabilities, not logits
    assert ((got["sentiment"] > 0) & (got["sentiment"] < 1)).all()
    # The Python API's embedding path, one sentence, none.
    np.testing.assert_allclose(runtime.encode(ONNX_SENTENCES[1]), got["embeddings"][1:2], atol=1e-5)
    assert runtime.encode([]).shape == (0, 16)


@pytest.mark.parametrize("variant, op", [("int8", "MatMulNBits"), ("int8_dynamic", "MatMulInteger")])
def test_int8_quantises_the_encoder_weights_but_not_projection_or_heads(exported, variant, op):
    model, tokenizer, out = exported
    graph = onnx.load(str(out / FILES[variant])).graph
    # Each encoder layer has 6 quantised weight MatMuls (q, k, v, attention output, both feed-forward layers) …
    assert [node.op_type for node in graph.node].count(op) == 6 * model.config.encoder_config.num_hidden_layers
    # … and the projection and heads keep fp32 weights (the attention's activation products stay float MatMuls).
    float_weights = {tuple(init.dims) for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    for shape in ((32, 16), (16, 3), (16, 2), (16, 1)):  # [in, out] after a Gemm's split, else [out, in]
        assert shape in float_weights or shape[::-1] in float_weights, shape
    runtime = OnnxSentMtl.from_pretrained(out, variant)
    got = runtime.predict(ONNX_SENTENCES)
    assert got["embeddings"].shape == (len(ONNX_SENTENCES), 16) and got["tone"].shape == (len(ONNX_SENTENCES), 3)
    assert cosine(got["embeddings"], sentmtl.encode(model, ONNX_SENTENCES, tokenizer, precision="fp32")).min() > 0.9
    assert OnnxSentMtl.from_pretrained(out).variant == "int8"  # the default


@pytest.mark.parametrize("name", ["embeddings", "input_ids"])
def test_a_task_named_like_a_graph_input_or_output_is_refused(tiny_encoder_dir, synthetic_csv, tmp_path, name, capsys):
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[{"name": name, "type": "regression"}]
    )
    with pytest.raises(ValueError, match=rf"tasks named \['{name}'\] would clash"):
        export_onnx(model, tokenizer, tmp_path / "x")
    # run_mtl.py --export_onnx refuses it before training, not after.
    from sentmtl.training.run import main

    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        f"tasks:\n  - {{name: {name}, type: classification, labels: [negative, positive], "
        f"data: {{train_file: {synthetic_csv}}}, text_column: text, label_column: sentiment}}\n"
    )
    flags = [
        str(run_file),
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--embedding_size",
        "16",
        "--output_dir",
        str(tmp_path / "o"),
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--export_onnx",
        "true",
    ]
    assert main(flags) == 1  # a user error found while building the run
    assert "would clash" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_every_save_removes_the_export_of_the_weights_it_replaces(exported, tmp_path, synthetic_csv):
    """Issue 31, finding 2: save_pretrained / SentMtlTrainer.save_model over a folder with onnx/ kept the old graph,
    and --backend onnx then served the old model (cosine 0.24–0.28 to the new one)."""
    from sentmtl.training.trainer import SentMtlTrainer

    model, folder = model_folder_with_export(exported, tmp_path / "model")
    assert OnnxSentMtl.from_pretrained(folder, "fp32").encode(ONNX_SENTENCES).shape[0] == len(ONNX_SENTENCES)
    model.save_pretrained(folder)
    assert not (folder / "onnx").exists()

    model_folder_with_export(exported, tmp_path / "trainer")
    args = SentMtlTrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, eval_strategy="no")
    trainer = SentMtlTrainer(model=model, args=args, processing_class=exported[1])
    trainer.save_model(str(tmp_path / "trainer"))
    assert not (tmp_path / "trainer" / "onnx").exists()


def test_missing_extra_is_refused_before_training(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys):
    from sentmtl.training.run import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install \"sentmtl\[onnx\]\""):
        require_onnx()
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "o", "--export_onnx", "true")) == 2
    assert "sentmtl[onnx]" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.safetensors").exists()  # refused up front, nothing trained
