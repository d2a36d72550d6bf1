"""The whole-model ONNX path: export (encoder, pooling, projection, normalisation, every head), int8, the runtime,
run_embed.py --export_onnx / --backend onnx, run_mtl.py --export_onnx and the push of onnx/."""

import copy
import json
import os
import shutil
import sys

import numpy as np
import pytest
import torch

import sentmtl
from sentmtl.serving.embed import pad_ids

try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import onnxscript  # noqa: F401
except ImportError:  # the optional extra; CI installs it (".[dev]"), so there it must be present
    if os.environ.get("CI"):
        raise
    pytest.skip("the onnx extra is not installed (pip install 'sentmtl[onnx]')", allow_module_level=True)

from conftest import tiny_run_flags  # noqa: E402

from sentmtl.serving.onnx_export import FILES, MANIFEST, export_onnx, require_onnx  # noqa: E402
from sentmtl.serving.onnx_runtime import OnnxSentMtl  # noqa: E402
from sentmtl.training.arguments import SentMtlTrainingArguments  # noqa: E402

SENTENCES = [
    "the food was great .",
    "bad",
    "the movie was really not very good and the plot was boring .",
    "i love it",
    "the service was awful , the place was worst .",
    "fine",
]
TASKS = [
    {"name": "tone", "type": "classification", "labels": ["neg", "mid", "pos"]},
    {"name": "sentiment", "type": "score"},
    {"name": "tags", "type": "multilabel", "labels": ["food", "movie"]},
    {"name": "stars", "type": "regression"},
    {"name": "sts", "type": "similarity"},
]


@pytest.fixture(scope="module")
def exported(tiny_encoder_dir, tmp_path_factory):
    """A tiny 5-task model (4 heads) with trained-looking heads, exported once."""
    torch.manual_seed(1)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=TASKS, matryoshka_dims=[16, 8]
    )
    with torch.no_grad():  # heads far from their zero-ish start, so a wrong head or order would show
        for task in ("tone", "sentiment", "tags", "stars"):
            getattr(model, f"{task}_head").weight.normal_(0, 2.0)
    out = export_onnx(model, tokenizer, tmp_path_factory.mktemp("onnx"))
    return model, tokenizer, out


def torch_outputs(model, tokenizer, sentences):
    """The reference: each sentence alone through the torch model (no padding at all), in fp32."""
    rows = []
    model.eval()
    with torch.no_grad():
        for sentence in sentences:
            batch = tokenizer([sentence], return_tensors="pt")
            out = model(batch["input_ids"], batch["attention_mask"])
            row = {"embeddings": out.embeddings[0].numpy()}
            for task in model.tasks:
                if task.has_head:
                    row[task.name] = task.kind.predict(task, out.task_outputs[task.name])[0].numpy()
            rows.append(row)
    return {name: np.stack([row[name] for row in rows]) for name in rows[0]}


def cosine(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_fp32_graph_gives_the_embedding_and_every_head(exported):
    model, tokenizer, out = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*FILES.values(), MANIFEST, "tokenizer.json", "tokenizer_config.json"]
    )
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")
    assert set(runtime.tasks()) == {"tone", "sentiment", "tags", "stars"}  # the similarity task has no head
    assert runtime.tasks()["tone"]["labels"] == ["neg", "mid", "pos"]
    want = torch_outputs(model, tokenizer, SENTENCES)
    got = runtime.predict(SENTENCES, batch_size=4)  # batched by length: padding, sorting and order restored
    assert cosine(got["embeddings"], want["embeddings"]).min() >= 0.9999
    for name in ("tone", "sentiment", "tags", "stars"):
        assert got[name].shape == want[name].shape, name
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, err_msg=name)
    np.testing.assert_allclose(got["tone"].sum(1), 1.0, atol=1e-5)  # probabilities, not logits
    assert ((got["sentiment"] > 0) & (got["sentiment"] < 1)).all()
    # The Python API's embedding path, one sentence, none.
    np.testing.assert_allclose(runtime.encode(SENTENCES[1]), got["embeddings"][1:2], atol=1e-5)
    assert runtime.encode([]).shape == (0, 16)


def test_truncate_dim_matches_the_torch_path(exported):
    model, tokenizer, out = exported
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")
    want = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32", truncate_dim=8)
    got = runtime.encode(SENTENCES, truncate_dim=8)
    assert got.shape == (len(SENTENCES), 8)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"truncate_dim=17: an integer in 1 … the embedding size \(16\)"):
        runtime.encode(SENTENCES, truncate_dim=17)


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
    got = runtime.predict(SENTENCES)
    assert got["embeddings"].shape == (len(SENTENCES), 16) and got["tone"].shape == (len(SENTENCES), 3)
    assert cosine(got["embeddings"], sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32")).min() > 0.9
    assert OnnxSentMtl.from_pretrained(out).variant == "int8"  # the default


def test_pad_ids_matches_the_tokenizer_on_both_sides(tiny_tokenizer):
    ids = tiny_tokenizer(SENTENCES)["input_ids"]
    for side in ("right", "left"):
        tiny_tokenizer.padding_side = side
        try:
            want = tiny_tokenizer.pad({"input_ids": ids}, return_tensors="np")
            input_ids, mask = pad_ids(ids, tiny_tokenizer)
        finally:
            tiny_tokenizer.padding_side = "right"
        np.testing.assert_array_equal(input_ids, want["input_ids"])
        np.testing.assert_array_equal(mask, want["attention_mask"])
        assert input_ids.dtype == np.int64


def test_run_embed_exports_and_embeds_with_the_onnx_backend(exported, tmp_path, capsys):
    import run_embed

    model, tokenizer, _ = exported
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    assert run_embed.main(["--model_name_or_path", str(model_dir), "--export_onnx", str(model_dir / "onnx")]) == 0
    assert "--backend onnx" in capsys.readouterr().out
    sentences = tmp_path / "in.txt"
    sentences.write_text("\n".join(SENTENCES) + "\n")
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
        want = OnnxSentMtl.from_pretrained(model_dir, variant).encode(SENTENCES)
        np.testing.assert_allclose(np.load(output), want, atol=1e-6)
    torch_path = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32")
    assert cosine(np.load(tmp_path / "fp32.npy"), torch_path).min() >= 0.9999


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--export_onnx", "x", "--truncate_dim", "8"], "--truncate_dim does not apply to --export_onnx"),
        (["--export_onnx", "x", "--max_length", "32"], "--max_length does not apply to --export_onnx"),
        (["--export_onnx", "x", "--precision", "bf16"], "--precision bf16 does not apply to --export_onnx"),
        (
            ["--backend", "onnx", "--model_name_or_path", "m", "--precision", "bf16"],
            "--precision bf16 applies to --backend torch",
        ),
        (["--backend", "onnx", "--model_name_or_path", "m", "--device", "cuda"], "--backend onnx runs on the CPU"),
        (["--backend", "onnx"], "--backend onnx needs --model_name_or_path"),
        (
            ["--backend", "onnx", "--model_name_or_path", "m", "--seed", "3"],
            "--seed seeds a plain encoder's fresh projection",
        ),
        (["--onnx_variant", "fp32"], "--onnx_variant fp32 applies to --backend onnx"),
        (["--backend", "onnx", "--model_name_or_path", "m", "--export_onnx", "x"], "exports read the torch model"),
        (["--export_onnx", "x", "a sentence"], "--export_onnx writes a model; it takes no sentences"),
    ],
)
def test_run_embed_refuses_flags_the_onnx_backend_cannot_honour(flags, message, capsys):
    import run_embed

    with pytest.raises(SystemExit):
        run_embed.main(flags)
    assert message in capsys.readouterr().err


def test_onnx_backend_without_an_export_says_how_to_make_one(tmp_path, capsys):
    import run_embed

    assert run_embed.main(["--backend", "onnx", "--model_name_or_path", str(tmp_path), "hello"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path} holds no exported ONNX model" in err and f"--export_onnx {tmp_path / 'onnx'}" in err


def test_a_variant_that_was_not_exported_is_named(exported, tmp_path):
    _, _, out = exported
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"] = {"fp32": manifest["files"]["fp32"]}
    copy = tmp_path / "fp32only"
    copy.mkdir()
    for path in out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"variant='int8': .* has fp32"):
        OnnxSentMtl.from_pretrained(copy)


def test_missing_extra_is_refused_before_training(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys):
    from sentmtl.training.run import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install \"sentmtl\[onnx\]\""):
        require_onnx()
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "o", "--export_onnx", "true")) == 2
    assert "sentmtl[onnx]" in capsys.readouterr().err
    assert not (tmp_path / "o" / "model.safetensors").exists()  # refused up front, nothing trained


def test_run_mtl_exports_onnx_and_the_push_uploads_it(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """onnx/ reaches the repository: the file list handed to the Hub client, filtered the way the client filters it."""
    from huggingface_hub.utils import filter_repo_objects

    from sentmtl.serving.hub import files_to_upload, push_folder
    from sentmtl.training.run import main

    out = tmp_path / "run"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--export_onnx", "true")) == 0
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")  # found in out/onnx
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    got = runtime.predict(SENTENCES)
    want = torch_outputs(model, tokenizer, SENTENCES)
    assert cosine(got["embeddings"], want["embeddings"]).min() >= 0.9999
    np.testing.assert_allclose(got["classification"], want["classification"], atol=1e-4)

    calls = {}

    class FakeApi:  # the network boundary
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message, revision=None):
            every = sorted(p.relative_to(folder_path).as_posix() for p in folder_path.rglob("*") if p.is_file())
            calls["uploaded"] = sorted(filter_repo_objects(every, allow_patterns=allow_patterns))

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr("sentmtl.serving.hub.check_hub_reachable", lambda: None)
    push_folder(out, "someone/model")
    uploaded = calls["uploaded"]
    assert uploaded == files_to_upload(out)
    assert {*(f"onnx/{name}" for name in FILES.values()), f"onnx/{MANIFEST}", "onnx/tokenizer.json"} <= set(uploaded)
    assert "model.safetensors" in uploaded and "training_args.bin" not in uploaded
    # Trained again into the same folder without --export_onnx: the old graph must not be served or pushed.
    assert (
        main(
            tiny_run_flags(
                tiny_encoder_dir, synthetic_csv, out, "--overwrite_output_dir", "true", "--num_train_epochs", "1"
            )
        )
        == 0
    )
    assert not (out / "onnx").exists()
    assert not any(name.startswith("onnx/") for name in files_to_upload(out))


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


def test_a_large_regression_head_exports(tiny_encoder_dir, tmp_path):
    """The parity check is relative for large values: fp32 rounding of a head predicting ~1e4 is not an export bug."""
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[{"name": "price", "type": "regression"}]
    )
    with torch.no_grad():
        model.price_head.weight.normal_(0, 3e3)
        model.price_head.bias.fill_(2e4)
    out = export_onnx(model, tokenizer, tmp_path / "x", quantize=False)
    got = OnnxSentMtl.from_pretrained(out, "fp32").predict(SENTENCES)["price"]
    assert np.abs(got).min() > 1e3
    np.testing.assert_allclose(got, torch_outputs(model, tokenizer, SENTENCES)["price"], rtol=1e-4)


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


def test_runtime_checks_its_arguments_and_manifest_format(exported, tmp_path):
    _, _, out = exported
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")
    with pytest.raises(ValueError, match=r"max_length=65: 1 … 64, the encoder's token limit"):
        runtime.encode(SENTENCES, max_length=65)
    with pytest.raises(ValueError, match=r"outputs=\[\]: name some of this graph's outputs"):
        runtime.predict(SENTENCES, outputs=[])
    copy = tmp_path / "future"
    copy.mkdir()
    for path in out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ValueError, match="format 99; this sentmtl reads format 1"):
        OnnxSentMtl.from_pretrained(copy)
    with pytest.raises(FileNotFoundError, match="is not a local folder"):
        OnnxSentMtl.from_pretrained("someone/model-on-the-hub")


def _model_folder_with_export(exported, folder):
    """`folder`: the exported model saved, and its graph in `folder/onnx`, as run_mtl.py --export_onnx leaves it."""
    model, tokenizer, out = exported
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    shutil.copytree(out, folder / "onnx")
    return model, folder


def test_every_save_removes_the_export_of_the_weights_it_replaces(exported, tmp_path, synthetic_csv):
    """Issue 31, finding 2: save_pretrained / SentMtlTrainer.save_model over a folder with onnx/ kept the old graph,
    and --backend onnx then served the old model (cosine 0.24–0.28 to the new one)."""
    from sentmtl.training.trainer import SentMtlTrainer

    model, folder = _model_folder_with_export(exported, tmp_path / "model")
    assert OnnxSentMtl.from_pretrained(folder, "fp32").encode(SENTENCES).shape[0] == len(SENTENCES)
    model.save_pretrained(folder)
    assert not (folder / "onnx").exists()

    _model_folder_with_export(exported, tmp_path / "trainer")
    args = SentMtlTrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, eval_strategy="no")
    trainer = SentMtlTrainer(model=model, args=args, processing_class=exported[1])
    trainer.save_model(str(tmp_path / "trainer"))
    assert not (tmp_path / "trainer" / "onnx").exists()


def test_the_runtime_refuses_a_graph_beside_other_weights(exported, tmp_path):
    model, folder = _model_folder_with_export(exported, tmp_path / "model")
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.shared_projection.weight.add_(0.5)
    saved = folder / "model.safetensors"
    new_weights = tmp_path / "new"
    changed.save_pretrained(new_weights)
    shutil.copy(new_weights / "model.safetensors", saved)  # weights replaced by hand: no save removed onnx/
    with pytest.raises(ValueError, match=r"was made from other weights than those in .*--export_onnx .*onnx"):
        OnnxSentMtl.from_pretrained(folder)
    model.save_pretrained(tmp_path / "old")
    shutil.copy(tmp_path / "old" / "model.safetensors", saved)  # the export's own weights: served
    OnnxSentMtl.from_pretrained(folder, "fp32")
    manifest = json.loads((folder / "onnx" / MANIFEST).read_text())
    del manifest["weights_fingerprint"]  # as sentmtl 0.2 wrote it
    (folder / "onnx" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        ValueError, match=r"records no fingerprint .*sentmtl 0.2.*python run_embed.py --model_name_or_path"
    ):
        OnnxSentMtl.from_pretrained(folder)
    OnnxSentMtl.from_pretrained(exported[2])  # an export folder with no weights beside it: nothing to disagree with


def test_the_default_install_needs_no_onnx_package(tiny_encoder_dir, tmp_path):
    """Without the extra, importing sentmtl and embedding with the torch backend work (onnx is imported lazily)."""
    script = (
        "import sys\nfor name in ('onnx', 'onnxruntime', 'onnxscript'):\n    sys.modules[name] = None\n"
        "import run_embed\nsys.exit(run_embed.main(['--model_name_or_path', sys.argv[1], 'the food was great .']))"
    )
    import subprocess

    from conftest import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_encoder_dir)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "size=" in done.stdout


@pytest.mark.real_encoder
@pytest.mark.slow
def test_real_encoder_onnx_parity_on_the_corpus_eval_split(data_dir, tmp_path):
    """The bundled MiniLM trained on a corpus slice, exported by the run: fp32 graph = torch; int8 close enough to
    serve Task A (agreement on the full corpus's held-out split, 600 sentences)."""
    from sentmtl.data.corpus import load_sentiment_corpus
    from sentmtl.data.split import train_test_split
    from sentmtl.training.run import main

    out = tmp_path / "real"
    flags = [
        "--data_dir",
        str(data_dir),
        "--max_samples",
        "400",
        "--num_train_epochs",
        "1",
        "--output_dir",
        str(out),
        "--shared_learning_rate",
        "5e-4",
        "--head_learning_rate",
        "5e-4",
        "--eval_strategy",
        "no",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        "--export_onnx",
        "true",
    ]
    assert main(flags) == 0
    sentences = list(train_test_split(load_sentiment_corpus(data_dir), 0.2, 42)["test"]["sentence"])
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    want = torch_outputs(model, tokenizer, sentences)
    fp32 = OnnxSentMtl.from_pretrained(out, "fp32").predict(sentences)
    assert cosine(fp32["embeddings"], want["embeddings"]).min() >= 0.9999
    for name in ("classification", "sentiment"):
        np.testing.assert_allclose(fp32[name], want[name], atol=1e-4, err_msg=name)
    int8 = OnnxSentMtl.from_pretrained(out, "int8").predict(sentences)
    close = cosine(int8["embeddings"], want["embeddings"])
    assert close.mean() >= 0.99 and close.min() >= 0.99, (close.mean(), close.min())  # 0.9987, 0.9951 measured
    agreement = (int8["classification"].argmax(1) == want["classification"].argmax(1)).mean()
    assert agreement >= 0.99, agreement  # 0.995 measured (int8_dynamic: 0.988, which is why it is not the default)
