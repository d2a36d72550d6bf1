"""Prompts end to end: a run whose tasks take query / document prompts, then every path that reads text gives the
same embeddings (encode, run_embed.py, the sentence-transformers export, the ONNX runtime) and the same class
probabilities (the model with the task's prompt, the text-classification pipeline with and without sentmtl)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from helpers import cosine, retrieval_flags, skip_without_onnx

import sentmtl
from sentmtl.training.run import main

PROMPTS = {"query": "i really ", "document": "this is a "}
SENTENCES = ["the movie was great .", "the food was very awful .", "the phone was fine ."]


def prompted_run_file(tmp_path, files) -> str:
    tasks = [
        {
            "name": "classification",
            "type": "classification",
            "labels": ["negative", "positive"],
            "data": {"train_file": str(files["labelled"])},
            "prompt": "query",
        },
        {
            "name": "retrieval",
            "type": "contrastive",
            "text_column": "anchor",
            "text_pair_column": "positive",
            "data": {"train_file": str(files["train"]), "validation_file": str(files["dev"])},
            "prompt": {"text": "query", "text_pair": "document"},
        },
    ]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"prompts": PROMPTS, "default_prompt_name": "document", "tasks": tasks}))
    return str(path)


@pytest.fixture
def prompted_model(tiny_encoder_dir, retrieval_files, tmp_path):
    out = tmp_path / "run"
    flags = retrieval_flags(tiny_encoder_dir, out, "--num_train_epochs", "1", "--bf16", "false")
    assert main([prompted_run_file(tmp_path, retrieval_files), *flags]) == 0
    return out


def test_a_prompted_run_saves_its_prompts_and_every_client_applies_them(prompted_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    import run_embed

    out = prompted_model
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    assert model.config.prompts == PROMPTS and model.config.default_prompt_name == "document"
    assert model.config.prompt_token_ids == {"i really ": tokenizer("i really ", add_special_tokens=False)["input_ids"]}
    assert yaml.safe_load((out / "run_config.yaml").read_text())["prompts"] == PROMPTS
    assert "`query`: 'i really '" in (out / "README.md").read_text()

    queries = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32", prompt_name="query")
    by_hand = sentmtl.encode(model, ["i really " + s for s in SENTENCES], tokenizer, precision="fp32", prompt="")
    np.testing.assert_allclose(queries, by_hand, atol=1e-6)
    default = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32")  # the default prompt: document
    np.testing.assert_allclose(
        default, sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32", prompt_name="document")
    )
    assert cosine(default, queries).max() < 0.9999  # the prompts change the embedding

    assert run_embed.main(["--model_name_or_path", str(out), "--prompt_name", "query", "--precision", "fp32",
                           "--output_file", str(tmp_path / "q.npy"), *SENTENCES]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "q.npy"), queries, atol=1e-6)
    assert run_embed.main(["--model_name_or_path", str(out), "--prompt_name", "passage", *SENTENCES]) == 2

    st_dir = tmp_path / "st"
    assert run_embed.main(["--model_name_or_path", str(out), "--export_sentence_transformer", str(st_dir)]) == 0
    st = SentenceTransformer(str(st_dir), device="cpu")
    assert st.default_prompt_name == "document"
    assert cosine(st.encode(SENTENCES, prompt_name="query"), queries).min() >= 0.9999
    assert cosine(st.encode(SENTENCES), default).min() >= 0.9999

    # The pipeline tokenises without the prompt; the model adds the task's own (query) to its inputs.
    from transformers import pipeline

    batch = tokenizer(["i really " + s for s in SENTENCES], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(batch["input_ids"], batch["attention_mask"]).task_outputs["classification"]
    expected = torch.softmax(logits, -1)[:, 1].numpy()
    classify = pipeline("text-classification", model=str(out), device="cpu", top_k=None)
    got = [next(s["score"] for s in scores if s["label"] == "positive") for scores in classify(SENTENCES)]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    script = (
        "import sys, json; sys.modules['sentmtl'] = None\n"
        "from transformers import pipeline\n"
        "p = pipeline('text-classification', model=sys.argv[1], trust_remote_code=True, device='cpu', top_k=None)\n"
        "print(json.dumps([[s['score'] for s in r if s['label'] == 'positive'][0] for r in p(json.loads(sys.argv[2]))]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(out), json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(json.loads(done.stdout.strip().splitlines()[-1]), expected, atol=1e-5)


def test_the_onnx_runtime_applies_the_prompts_by_name(prompted_model):
    skip_without_onnx()
    import run_embed
    from sentmtl.serving.onnx_runtime import OnnxSentMtl

    out = prompted_model
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    assert run_embed.main(["--model_name_or_path", str(out), "--export_onnx", str(out / "onnx")]) == 0
    runtime = OnnxSentMtl.from_pretrained(str(out), variant="fp32")
    for name in ("query", "document"):
        expected = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32", prompt_name=name)
        assert cosine(runtime.encode(SENTENCES, prompt_name=name), expected).min() >= 0.9999
    assert (
        cosine(runtime.encode(SENTENCES), sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32")).min() >= 0.9999
    )
    assert runtime.tasks()["classification"]["prompt"] == "query"
    with pytest.raises(ValueError, match="not one of the model's prompts"):
        runtime.encode(SENTENCES, prompt_name="passage")


def test_a_continued_run_reads_a_task_that_names_no_prompt_with_its_saved_one(
    tiny_encoder_dir, retrieval_files, tmp_path, monkeypatch
):
    """Review item 2: continuing a prompted checkpoint with a run file whose tasks omit `prompt:` trained them on the
    default prompt (document) instead of the saved ones; the data now read them as the checkpoint learned them."""
    import sentmtl.training.run as run_module

    tasks = yaml.safe_load(open(prompted_run_file(tmp_path, retrieval_files)))["tasks"]
    specs = [{key: task[key] for key in ("name", "type", "labels", "prompt") if key in task} for task in tasks]
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, prompts=PROMPTS, default_prompt_name="document", tasks=specs
    )
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    for task in tasks:
        del task["prompt"]
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    read = {}

    def recording(run_tasks, *args, **kwargs):
        data = build_run_data(run_tasks, *args, **kwargs)
        read.update(
            {
                source.tasks[0].name: (source.train[0]["text"], source.train[0].get("text_pair"))
                for source in data.sources
            }
        )
        return data

    build_run_data = run_module.build_run_data
    monkeypatch.setattr(run_module, "build_run_data", recording)
    flags = retrieval_flags(tmp_path / "saved", tmp_path / "out", "--max_steps", "1", "--bf16", "false")
    assert main([str(tmp_path / "bare.yaml"), *flags]) == 0
    assert read["classification"][0].startswith("i really ")
    assert read["retrieval"][0].startswith("i really ") and read["retrieval"][1].startswith("this is a ")
    saved = sentmtl.load_model_and_tokenizer(str(tmp_path / "out"))[0].config
    assert saved.task("classification").prompt == "query"


def test_a_teacher_embeds_the_texts_as_prompted_once(tiny_encoder_dir):
    """Teacher vectors are of the table's texts, which carry the task's prompt: the teacher adds no prompt of its own
    (the model's default would be a second one)."""
    from sentmtl.data.teacher_cache import teacher_encoder

    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, prompts=PROMPTS, default_prompt_name="query"
    )
    teacher = teacher_encoder(model, tokenizer, None, 32)
    prompted = ["i really " + s for s in SENTENCES]
    expected = sentmtl.encode(model, prompted, tokenizer, pooled=True, precision="fp32", prompt="")
    np.testing.assert_allclose(teacher.encode(prompted), expected, atol=1e-6)


@pytest.mark.real_encoder
def test_e5_style_prompts_on_the_bundled_encoder_agree_across_clients(tmp_path):
    """The bundled MiniLM with E5's "query: " / "passage: ": sentmtl.encode, its sentence-transformers export and the
    pipeline (whose classification task takes the query prompt) read the same prompted tokens."""
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline

    from sentmtl.serving.st_export import export_sentence_transformer

    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        None,
        prompts={"query": "query: ", "document": "passage: "},
        tasks=[
            {"name": "classification", "type": "classification", "labels": ["negative", "positive"], "prompt": "query"}
        ],
    )
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    st = SentenceTransformer(str(export_sentence_transformer(model, tokenizer, tmp_path / "st")), device="cpu")
    sentences = ["How do I reset my password?", "The battery lasts two days."]
    for name in ("query", "document"):
        ours = sentmtl.encode(model, sentences, tokenizer, precision="fp32", prompt_name=name)
        assert cosine(st.encode(sentences, prompt_name=name), ours).min() >= 0.9999
    batch = tokenizer(["query: " + s for s in sentences], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(model.eval()(**batch).task_outputs["classification"], -1)[:, 1].numpy()
    scores = pipeline("text-classification", model=str(tmp_path / "model"), device="cpu", top_k=None)(sentences)
    got = [next(s["score"] for s in row if s["label"] == "positive") for row in scores]
    np.testing.assert_allclose(got, expected, atol=1e-5)
