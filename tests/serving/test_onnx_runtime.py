"""sentmtl/serving/onnx_runtime.py and run_embed.py --backend onnx: truncation, padding, the manifest and weights
fingerprint checks, variants, and the flags the ONNX backend refuses."""

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import ONNX_SENTENCES, model_folder_with_export, skip_without_onnx, torch_outputs

import sentmtl
from sentmtl.serving.embed import pad_ids
from sentmtl.serving.onnx_export import MANIFEST
from sentmtl.serving.onnx_runtime import OnnxSentMtl

skip_without_onnx()  # the optional extra: the whole module skips without it (CI installs it)


def test_truncate_dim_matches_the_torch_path(exported):
    model, tokenizer, out = exported
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")
    want = sentmtl.encode(model, ONNX_SENTENCES, tokenizer, precision="fp32", truncate_dim=8)
    got = runtime.encode(ONNX_SENTENCES, truncate_dim=8)
    assert got.shape == (len(ONNX_SENTENCES), 8)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match=r"truncate_dim=17: an integer in 1 … the embedding size \(16\)"):
        runtime.encode(ONNX_SENTENCES, truncate_dim=17)


def test_each_head_reads_its_own_tasks_prompt_unless_one_is_named(tiny_encoder_dir, tmp_path):
    """Review item 3: predict() without a prompt gave every head the default prompt; a head now reads the text with
    its task's prompt (as the torch model's task output with that prompt), the embedding the default one, and a
    named prompt still applies to every output."""
    from sentmtl.serving.onnx_export import export_onnx

    torch.manual_seed(2)
    prompts = {"query": "i really ", "document": "this is a "}
    tasks = [
        {"name": "tone", "type": "classification", "labels": ["neg", "mid", "pos"], "prompt": "query"},
        {"name": "sentiment", "type": "score"},  # the default prompt
        {"name": "stars", "type": "regression", "prompt": "query"},
    ]
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=tasks, prompts=prompts, default_prompt_name="document"
    )
    with torch.no_grad():
        for task in ("tone", "sentiment", "stars"):
            getattr(model, f"{task}_head").weight.normal_(0, 2.0)
    runtime = OnnxSentMtl.from_pretrained(export_onnx(model, tokenizer, tmp_path / "onnx"), "fp32")
    assert runtime.tasks()["tone"]["prompt"] == "query" and runtime.tasks()["sentiment"]["prompt"] == "document"
    by_prompt = {
        name: torch_outputs(model, tokenizer, [text + s for s in ONNX_SENTENCES]) for name, text in prompts.items()
    }
    got = runtime.predict(ONNX_SENTENCES, batch_size=4)
    np.testing.assert_allclose(got["embeddings"], by_prompt["document"]["embeddings"], atol=1e-5)
    for name, prompt in (("tone", "query"), ("sentiment", "document"), ("stars", "query")):
        np.testing.assert_allclose(got[name], by_prompt[prompt][name], atol=1e-4, err_msg=name)
    named = runtime.predict(ONNX_SENTENCES, prompt_name="document")  # every output with the one named
    for name in ("tone", "sentiment", "stars"):
        np.testing.assert_allclose(named[name], by_prompt["document"][name], atol=1e-4, err_msg=name)
    assert not np.allclose(named["tone"], got["tone"], atol=1e-3)  # the prompt matters to the head
    cut = []
    runtime.predict(["word " * 100], outputs=["tone", "sentiment"], truncated=cut)
    assert cut == [0]  # cut under both prompts: reported once


def test_pad_ids_matches_the_tokenizer_on_both_sides(tiny_tokenizer):
    ids = tiny_tokenizer(ONNX_SENTENCES)["input_ids"]
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


def test_runtime_checks_its_arguments_and_manifest_format(exported, tmp_path):
    _, _, out = exported
    runtime = OnnxSentMtl.from_pretrained(out, "fp32")
    with pytest.raises(ValueError, match=r"max_length=65: 1 … 64, the encoder's token limit"):
        runtime.encode(ONNX_SENTENCES, max_length=65)
    with pytest.raises(ValueError, match=r"outputs=\[\]: name some of this graph's outputs"):
        runtime.predict(ONNX_SENTENCES, outputs=[])
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


def test_the_runtime_refuses_a_graph_beside_other_weights(exported, tmp_path):
    model, folder = model_folder_with_export(exported, tmp_path / "model")
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


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--export_onnx", "x", "--truncate_dim", "8"], "--truncate_dim does not apply to --export_onnx"),
        (["--export_onnx", "x", "--max_length", "32"], "--max_length does not apply to --export_onnx"),
        (["--export_onnx", "x", "--precision", "bf16"], "--precision bf16 does not apply to --export_onnx"),
        (
            ["--export_sentence_transformer", "x", "--precision", "bf16-weights"],
            "--precision bf16-weights applies when embedding",
        ),
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
