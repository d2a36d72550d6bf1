"""Whole LoRA runs of run_mtl.py on the tiny encoder: an interrupted run resumes exactly (with the weight average too)
and refuses other adapters, the adapter folder and the merged one load alike, continuing an adapter folder, the Hub
push, the sentence-transformers and ONNX exports of an adapter folder, and the processes where peft is not
importable (a default run, the flags, an adapter folder through trust_remote_code). Under DDP:
tests/e2e/test_two_processes.py."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import (
    ONNX_SENTENCES,
    REPO_ROOT,
    SHARING_SENTENCES,
    cosine,
    encoder_dir,
    exact_flags,
    tiny_run_flags,
    torch_outputs,
)
from safetensors.torch import load_file

import sentmtl
from sentmtl.model.lora import ADAPTER_FOLDER, is_base_weight
from sentmtl.training.checkpoints import latest_checkpoint

LORA = ("--lora_r", "4", "--lora_alpha", "8")


def run_in_process(flags, callbacks=()):
    from sentmtl.training.run import parse_args, run

    return run(*parse_args(flags), callbacks=callbacks)


def signal_at(step):
    from transformers import TrainerCallback

    class SignalAtStep(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGINT)

    return SignalAtStep()


def embeddings(folder):
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(folder))
    return sentmtl.encode(model, SHARING_SENTENCES, tokenizer, precision="fp32")


def losses(result):
    return [entry["loss"] for entry in result.log_history if "loss" in entry]


@pytest.mark.parametrize("extra", [(), ("--ema_decay", "0.8")], ids=["lora", "lora_ema"])
def test_an_interrupted_lora_run_resumes_to_the_uninterrupted_one(
    tiny_encoder_dir, synthetic_csv, tmp_path, known_handlers, extra
):
    """The checkpoint is an adapter folder (no encoder weights): the resumed run rebuilds the base, loads the adapters,
    heads and optimizer, and continues on the same loss curve to the same model. With --ema_decay the average covers
    the adapters, projection and heads, and continues from the checkpoint too."""
    from sentmtl.training.stopping import RunInterrupted

    flags = ("--logging_steps", "1", *LORA, *extra)
    reference = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "reference", *flags))
    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *flags), callbacks=[signal_at(10)])
    checkpoint = latest_checkpoint(out)
    assert (checkpoint / ADAPTER_FOLDER / "adapter_model.safetensors").is_file()
    assert not any(
        key.startswith("encoder.") and "lora_" not in key for key in load_file(checkpoint / "model.safetensors")
    )
    if extra:  # the average, like the checkpoint, holds no copy of the frozen encoder
        average = torch.load(checkpoint / "ema_weights.pt", weights_only=True)
        assert any("lora_B" in key for key in average) and not any(map(is_base_weight, average))
    resumed = run_in_process(
        tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *flags, "--resume_from_checkpoint", "auto")
    )
    assert losses(resumed) == pytest.approx(losses(reference), abs=1e-6)
    for key in ("eval_loss", "eval_classification_accuracy", "eval_sentiment_mse"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
    np.testing.assert_allclose(embeddings(out), embeddings(tmp_path / "reference"), atol=1e-6)


def test_resuming_with_other_adapters_is_refused(tiny_encoder_dir, synthetic_csv, tmp_path, known_handlers):
    from sentmtl.training.stopping import RunInterrupted

    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted):
        run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *LORA), callbacks=[signal_at(3)])
    resume = ("--resume_from_checkpoint", "auto")
    with pytest.raises(ValueError, match=r"saved with LoRA r=4, alpha=8.*this run builds LoRA r=8, alpha=16"):
        run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--lora_r", "8", *resume))
    with pytest.raises(ValueError, match=r"saved with LoRA r=4, alpha=8.*this run builds LoRA r=4, alpha=4"):
        run_in_process(
            tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--lora_r", "4", "--lora_alpha", "4", *resume)
        )
    with pytest.raises(ValueError, match=r"saved with LoRA r=4.*this run builds no LoRA adapters"):
        run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *resume))


def test_the_merged_run_saves_a_plain_model_that_embeds_as_the_adapter_folder(
    tiny_encoder_dir, synthetic_csv, tmp_path
):
    adapter, merged = tmp_path / "adapter", tmp_path / "merged"
    first = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, adapter, *LORA))
    second = run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, merged, *LORA, "--merge_lora", "true"))
    assert first["eval_loss"] == second["eval_loss"]  # the same training; only the save differs
    assert json.loads((merged / "config.json").read_text()).get("lora") is None
    assert not (merged / ADAPTER_FOLDER).exists() and (adapter / ADAPTER_FOLDER / "adapter_config.json").is_file()
    np.testing.assert_allclose(embeddings(merged), embeddings(adapter), atol=1e-5)
    for folder, saved in ((adapter, "an adapter folder"), (merged, "saved merged into the encoder")):
        card = (folder / "README.md").read_text()
        assert "LoRA adapters (r=4, alpha=8) in the encoder's query, key, value, dense layers" in card
        assert saved in card and "| LoRA | r=4, alpha=8, dropout=0.1 |" in card and "trainable parameters" in card
    train = json.loads((adapter / "train_results.json").read_text())
    assert train["trainable_parameters"] < train["total_parameters"] / 2


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_activation_checkpointing_trains_the_adapters_as_without_it(
    tiny_encoder_dir, synthetic_csv, tmp_path, reentrant, kind
):
    """--activation_checkpointing with adapters: behind a frozen encoder's embeddings no layer input needs a gradient,
    and reentrant checkpointing then leaves adapters untrained unless the inputs are made to require one (a known
    peft pitfall). The checkpointed run (its layers checkpointed from the first step) recomputes each layer in
    backward and must reach the same losses and the same adapters. BERT's layers checkpoint through transformers'
    switch, MPNet's through sentmtl's (sentmtl/model/checkpointing.py)."""
    encoder = tiny_encoder_dir if kind == "bert" else encoder_dir(tmp_path, kind, tiny_encoder_dir)
    from transformers import TrainerCallback

    seen = []

    class Checkpointed(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):
            seen.append(model.is_activation_checkpointing)

    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    first = run_in_process(exact_flags(encoder, synthetic_csv, plain, *LORA))
    flags = ["--activation_checkpointing", "true"]
    if reentrant:
        flags += ["--activation_checkpointing_kwargs", '{"use_reentrant": true}']
    second = run_in_process(exact_flags(encoder, synthetic_csv, checkpointed, *LORA, *flags), [Checkpointed()])
    assert seen and all(seen)
    np.testing.assert_allclose(losses(second), losses(first), rtol=1e-5)
    adapters = [load_file(folder / ADAPTER_FOLDER / "adapter_model.safetensors") for folder in (plain, checkpointed)]
    assert adapters[0].keys() == adapters[1].keys() and any("lora_B" in key for key in adapters[0])
    for key, value in adapters[0].items():
        torch.testing.assert_close(adapters[1][key], value, atol=1e-6, rtol=1e-5)
        if "lora_B" in key:
            assert value.abs().sum() > 0  # lora_B starts at zero: it trained


def test_continuing_an_adapter_folder(tiny_encoder_dir, synthetic_csv, tmp_path, trained_dir):
    first = tmp_path / "first"
    run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, first, *LORA))
    flags = lambda out, *extra: [  # noqa: E731
        *tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *extra),
        "--model_name_or_path",
        str(first),
    ]
    with pytest.raises(ValueError, match=r"holds LoRA adapters \(--lora_r 4 --lora_alpha 8 .*continue them with"):
        run_in_process(flags(tmp_path / "plain"))
    result = run_in_process(flags(tmp_path / "again", *LORA))
    assert json.loads((tmp_path / "again" / "config.json").read_text())["lora"]["r"] == 4
    assert result["eval_loss"] > 0
    with pytest.raises(ValueError, match="without LoRA adapters, and adapters are trained over a plain encoder"):
        run_in_process([*tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x", *LORA),
                        "--model_name_or_path", str(trained_dir)])  # fmt: skip


def test_an_adapter_folder_pushed_to_the_hub_loads_from_what_was_uploaded(
    tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch
):
    from huggingface_hub.utils import filter_repo_objects

    out = tmp_path / "run"
    run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *LORA))
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

    from sentmtl.serving.hub import push_folder

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr("sentmtl.serving.hub.check_hub_reachable", lambda: None)
    push_folder(out, "someone/lora-model")
    uploaded = calls["uploaded"]
    assert {"config.json", "model.safetensors", "lora.py", "adapter/adapter_config.json"} <= set(uploaded)
    assert "adapter/adapter_model.safetensors" in uploaded and "training_args.bin" not in uploaded
    snapshot = tmp_path / "snapshot"  # what a download of the repository gives
    for name in uploaded:
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / name, snapshot / name)
    np.testing.assert_allclose(embeddings(snapshot), embeddings(out), atol=1e-6)


def test_an_adapter_folder_exports_merged(tiny_encoder_dir, synthetic_csv, tmp_path):
    from helpers import skip_without_onnx

    from sentmtl.serving.st_export import export_sentence_transformer

    pytest.importorskip("sentence_transformers")
    out = tmp_path / "run"
    run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *LORA))
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(export_sentence_transformer(model, tokenizer, tmp_path / "st")), device="cpu")
    want = sentmtl.encode(model, SHARING_SENTENCES, tokenizer, precision="fp32")
    assert cosine(st.encode(SHARING_SENTENCES), want).min() >= 0.9999
    assert model.config.lora is not None  # the export merged a copy

    skip_without_onnx()
    from sentmtl.serving.onnx_export import export_onnx
    from sentmtl.serving.onnx_runtime import OnnxSentMtl

    export_onnx(model, tokenizer, out / "onnx")
    got = OnnxSentMtl.from_pretrained(out, "fp32").predict(ONNX_SENTENCES)  # the manifest matches the adapter folder
    reference = torch_outputs(model, tokenizer, ONNX_SENTENCES)
    assert cosine(got["embeddings"], reference["embeddings"]).min() >= 0.9999
    np.testing.assert_allclose(got["classification"], reference["classification"], atol=1e-4)


# -- where peft cannot be imported -----------------------------------------------------------------------------------

# `sys.modules["peft"] = None`: `import peft` raises ImportError and importlib (transformers' is_peft_available) finds
# no such package, as where it is not installed.
WITHOUT_PEFT = "import sys; sys.modules['peft'] = None\n"


def run_python(script, cwd, *args):
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"},
    )


def test_import_sentmtl_loads_and_encodes_without_importing_peft(trained_dir, tmp_path):
    script = (
        "import sys, sentmtl\n"
        "model, tokenizer = sentmtl.load_model_and_tokenizer(sys.argv[1])\n"
        "sentmtl.encode(model, ['the movie was great .'], tokenizer)\n"
        "print('peft' in sys.modules)\n"
    )
    result = run_python(script, tmp_path, trained_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_a_default_run_needs_no_peft_and_lora_flags_name_the_extra(tiny_encoder_dir, synthetic_csv, tmp_path):
    """transformers' Trainer imports peft itself when it is installed, so a default run is shown not to need it: it
    trains with peft unimportable."""
    script = WITHOUT_PEFT + "from sentmtl.training.run import main\nsys.exit(main(sys.argv[1:]))\n"
    flags = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "default", "--num_train_epochs", "1")
    result = run_python(script, REPO_ROOT, *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_python(script, REPO_ROOT, *tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "l", *LORA))
    assert result.returncode == 2
    assert 'LoRA adapters need peft, which is not installed: pip install "sentmtl[peft]"' in result.stderr


def test_an_adapter_folder_through_trust_remote_code(tiny_encoder_dir, synthetic_csv, tmp_path):
    """Without the package: with peft the copied code loads the adapters over the base encoder; without peft it
    refuses in one line naming the extra (an adapter folder holds no encoder weights to fall back on)."""
    out = tmp_path / "run"
    run_in_process(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, *LORA))
    script = (
        "import json, sys\nsys.modules['sentmtl'] = None\n"
        "import torch\nfrom transformers import AutoModel, AutoTokenizer\n"
        "model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "batch = tokenizer(json.loads(sys.argv[2]), padding=True, return_tensors='pt')\n"
        "with torch.no_grad():\n    print('embeddings', json.dumps(model(**batch).embeddings.tolist()))\n"
    )
    sentences = json.dumps(SHARING_SENTENCES)
    result = run_python(script, tmp_path, out, sentences)
    assert result.returncode == 0, result.stderr[-3000:]
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    batch = tokenizer(SHARING_SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**batch).embeddings.numpy()
    printed = [line for line in result.stdout.splitlines() if line.startswith("embeddings ")]
    assert printed, result.stdout[-2000:]
    np.testing.assert_allclose(np.array(json.loads(printed[-1].split(" ", 1)[1])), want, atol=1e-5)

    result = run_python(WITHOUT_PEFT + script, tmp_path, out, sentences)
    assert result.returncode != 0
    assert 'ImportError: LoRA adapters need peft, which is not installed: pip install "sentmtl[peft]"' in result.stderr
