"""Sharing: code files + auto_map (trust_remote_code without the package), continuing from a checkpoint, the model
card, the push path up to the network boundary, and the sentence-transformers export."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_run_flags
from transformers import AutoModel

import sentmtl
from sentmtl.serving.hub import HubPushError, files_to_upload, push_folder
from sentmtl.training.run import main

SENTENCES = ["the movie was great .", "the food was very awful .", "the phone was fine .", "the plot was boring ."]

# Runs in a fresh interpreter where `import sentmtl` fails, from a folder where the repository is not on sys.path.
REMOTE_CODE_SCRIPT = """
import json, sys
sys.modules["sentmtl"] = None  # any import of the package now raises ImportError
try:
    import sentmtl
    raise SystemExit("sentmtl is importable")
except ImportError:
    pass
import torch
from transformers import AutoModel, AutoTokenizer
path, sentences, resaved = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
model = AutoModel.from_pretrained(path, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
batch = tokenizer(sentences, padding=True, return_tensors="pt")
with torch.no_grad():
    out = model(**batch)
model.save_pretrained(resaved)  # a re-save must carry the code files again
print(json.dumps({"class": type(model).__module__, "embeddings": out.embeddings.tolist(),
                  "logits": out.logits.tolist()}))
"""


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny_encoder_dir):
    """A tiny model trained by run_mtl.py (module-scoped: several tests read it, none writes to it)."""
    from conftest import synthetic_rows

    tmp = tmp_path_factory.mktemp("shared")
    csv = tmp / "train.csv"
    rows = synthetic_rows(64)
    csv.write_text(
        "text,sentiment\n"
        + "".join(f"{s},{['negative', 'positive'][label]}\n" for s, label in zip(rows["sentence"], rows["label"]))
    )
    out = tmp / "model"
    assert main(tiny_run_flags(tiny_encoder_dir, csv, out)) == 0
    return out


def test_save_writes_auto_map_and_code_files(trained_dir):
    config = json.loads((trained_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_sentmtl.SentMtlConfig",
        "AutoModel": "modeling_sentmtl.SentMtlModel",
        "AutoModelForSequenceClassification": "modeling_sentmtl.SentMtlForSequenceClassification",
    }
    for name in (
        "modeling_sentmtl.py",
        "configuration_sentmtl.py",
        "encoders.py",
        "task_spec.py",
        "task_types.py",
        "distributed.py",
    ):
        assert (trained_dir / name).is_file(), name


def test_trust_remote_code_load_without_the_package(trained_dir, tmp_path):
    resaved = tmp_path / "resaved"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(trained_dir), json.dumps(SENTENCES), str(resaved)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["class"].startswith("transformers_modules.")  # the copied code, not the package
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(trained_dir))
    ours = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32")  # the exact path (bf16 is an approximation)
    np.testing.assert_allclose(np.array(remote["embeddings"]), ours, atol=1e-5)
    for name in ("modeling_sentmtl.py", "configuration_sentmtl.py", "encoders.py", "model.safetensors"):
        assert (resaved / name).is_file(), name


def test_package_load_needs_no_trust_remote_code(trained_dir):
    model = AutoModel.from_pretrained(trained_dir)  # no trust_remote_code: `import sentmtl` registered the class
    assert type(model) is sentmtl.SentMtlModel


def test_continue_from_a_checkpoint_keeps_the_trained_heads(
    trained_dir, tiny_encoder_dir, synthetic_csv, tmp_path, capsys
):
    # Evaluation-only on the same data: identical metrics prove the heads (not fresh ones) were loaded.
    flags = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "eval", "--freeze", "all")
    flags[flags.index("--model_name_or_path") + 1] = str(trained_dir)
    flags = [f for f in flags if f not in ("--embedding_size", "16")]
    assert main(flags) == 0
    before = json.loads((trained_dir / "eval_results.json").read_text())
    again = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    # (Not eval_loss: its distillation term measures against the encoder as each run starts.)
    for key in (
        "eval_classification_accuracy",
        "eval_classification_loss",
        "eval_sentiment_loss",
        "eval_sentiment_mse",
    ):
        assert again[key] == pytest.approx(before[key], abs=1e-6)
    # And training continues from there (e.g. on another domain).
    flags = [f if f != "all" else "none" for f in flags] + ["--classification_loss_weight", "2"]
    flags[flags.index("--output_dir") + 1] = str(tmp_path / "continued")
    assert main(flags) == 0
    continued = json.loads((tmp_path / "continued" / "train_results.json").read_text())
    assert continued["global_step"] > 0
    # An architecture flag the checkpoint does not share would be ignored: refused, naming flag and checkpoint value.
    bad = [*flags[:-2], "--projection_init", "identity"]
    bad[bad.index("--output_dir") + 1] = str(tmp_path / "refused")
    assert main(bad) != 0
    assert re.search(r"--projection_init identity cannot apply to .*projection_init='random'", capsys.readouterr().err)
    assert not (tmp_path / "refused" / "model.safetensors").exists()
    # The checkpoint fixes the heads; the run's losses and weights apply (they were silently the checkpoint's).
    tasks = json.loads((tmp_path / "continued" / "config.json").read_text())["tasks"]
    assert [(t["name"], t["loss_weight"]) for t in tasks] == [
        ("classification", 2.0),
        ("sentiment", 1.0),
        ("distillation", 10.0),
    ]


def test_model_card_reports_the_measured_metrics(trained_dir):
    card = (trained_dir / "README.md").read_text()
    metrics = json.loads((trained_dir / "eval_results.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers")
    assert "### Task `classification`" in card and "### Task `sentiment`" in card
    assert f"| accuracy | {metrics['eval_classification_accuracy']:.4f} |" in card
    assert f"| mse | {metrics['eval_sentiment_mse']:.4f} |" in card
    assert "trust_remote_code=True" in card and "--export_sentence_transformer" in card
    assert "train.csv" in card  # the user's data, not the UCI corpus
    assert "| `num_train_epochs` | 2.0 |" in card


@pytest.mark.real_encoder
def test_model_card_on_the_corpus_has_citation_license_and_sources(data_dir, tiny_encoder_dir, tmp_path):
    out = tmp_path / "uci"
    flags = [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--data_dir",
        str(data_dir),
        "--max_samples",
        "300",
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "1",
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
    ]
    assert main(flags) == 0
    card = (out / "README.md").read_text()
    metrics = json.loads((out / "eval_results.json").read_text())
    for source in ("amazon", "imdb", "yelp"):
        assert f"| accuracy_{source} | {metrics[f'eval_classification_accuracy_{source}']:.4f} |" in card
    assert "CC BY 4.0" in card and "kotzias2015group" in card and "a stratified subset of 300 sentences" in card


SECRET = "hf_sentmtlTestTokenThatMustNeverBeWritten"
ENV_SECRET = "hf_sentmtlEnvTokenThatMustNeverBeWritten"


def test_push_offline_fails_after_the_local_save_and_writes_no_token(
    tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys, caplog
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)
    out = tmp_path / "pushed"
    flags = tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        out,
        "--push_to_hub",
        "true",
        "--hub_model_id",
        "someone/sentmtl-test",
        "--hub_token",
        SECRET,
        "--save_strategy",
        "epoch",
    )
    assert main(flags) == 1
    captured = capsys.readouterr()
    assert "Pushing to someone/sentmtl-test failed: HF_HUB_OFFLINE is set" in captured.err
    assert f"python -m sentmtl.serving.hub {out} --hub_model_id someone/sentmtl-test" in captured.err
    # Nothing trained was lost: the folder is complete and loads.
    model, _ = sentmtl.load_model_and_tokenizer(str(out))
    assert model.config.embedding_size == 16
    # The token is in no file (checkpoints and the Trainer's pickled arguments included) and in no output.
    written = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in written)
    for path in written:
        data = path.read_bytes()
        assert SECRET.encode() not in data and ENV_SECRET.encode() not in data, path
    for text in (captured.out, captured.err, caplog.text):
        assert SECRET not in text and ENV_SECRET not in text


@pytest.mark.parametrize("revision", [None, "experiment-1"])
def test_push_uploads_the_complete_model_folder(trained_dir, monkeypatch, revision):
    """--hub_revision used to be ignored (everything went to main); it names the branch pushed to."""
    calls = {}

    class FakeApi:  # the network boundary: everything before it is real
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create_repo"] = (repo_id, private, exist_ok)
            return f"https://huggingface.co/{repo_id}"

        def create_branch(self, repo_id, branch, exist_ok=False):
            calls["create_branch"] = (repo_id, branch, exist_ok)

        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message, revision=None):
            calls["upload"] = (repo_id, folder_path, allow_patterns)
            calls["revision"] = revision

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr("sentmtl.serving.hub.check_hub_reachable", lambda: None)
    url = push_folder(trained_dir, "someone/model", token="tok", revision=revision)
    assert url == "https://huggingface.co/someone/model"
    assert calls["revision"] == revision
    assert calls.get("create_branch") == (None if revision is None else ("someone/model", revision, True))
    assert calls["create_repo"] == ("someone/model", None, True) and calls["token"] == "tok"
    uploaded = calls["upload"][2]
    assert uploaded == files_to_upload(trained_dir)
    needed = {
        "config.json",
        "model.safetensors",
        "modeling_sentmtl.py",
        "configuration_sentmtl.py",
        "encoders.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "README.md",
        "eval_results.json",
        "run_config.yaml",
    }
    assert needed <= set(uploaded)
    assert "training_args.bin" not in uploaded and not any(name.startswith("checkpoint-") for name in uploaded)


def test_push_without_hub_model_id_is_an_argument_error(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "x", "--push_to_hub", "true")) == 2
    assert "--push_to_hub needs --hub_model_id" in capsys.readouterr().err


def test_push_of_a_folder_without_a_model(tmp_path):
    with pytest.raises(HubPushError, match="holds no saved model"):
        push_folder(tmp_path, "someone/model")


def test_sentence_transformers_export_round_trip(trained_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    import run_embed

    export_dir = tmp_path / "st"
    assert (
        run_embed.main(["--model_name_or_path", str(trained_dir), "--export_sentence_transformer", str(export_dir)])
        == 0
    )
    st_embeddings = SentenceTransformer(str(export_dir), device="cpu").encode(SENTENCES)
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(trained_dir))
    ours = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32")  # the exact path (bf16 is an approximation)
    cosine = (st_embeddings * ours).sum(1) / np.linalg.norm(st_embeddings, axis=1) / np.linalg.norm(ours, axis=1)
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(st_embeddings, axis=1), 1.0, atol=1e-5)  # the Normalize module


def test_export_refuses_pooler_pooling(tiny_encoder_dir, tmp_path):
    from sentmtl.serving.st_export import export_sentence_transformer

    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), pooling="pooler")
    with pytest.raises(ValueError, match="pooling='pooler' has no sentence-transformers equivalent"):
        export_sentence_transformer(model, tokenizer, tmp_path / "st")
