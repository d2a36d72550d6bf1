"""The CUDA paths: moves, autocast, `encode` and run_embed on the GPU, the export of a GPU model, mixed-precision
training. Marked `gpu`; they skip on a machine without CUDA (CI), and `benchmarks/gpu_check.py` runs them on one."""

import json

import numpy as np
import pytest
import torch
from helpers import tiny_run_flags

import sentmtl
from sentmtl.serving.precision import default_device, fast_bf16_available
from sentmtl.training.run import main

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.py runs these)"),
]
SENTENCES = ["the movie was great .", "the food was awful !", "it was not bad .", "the phone is very good ."]


def test_the_gpu_is_the_default_device_and_auto_precision_is_fp32_there():
    assert default_device().type == "cuda"
    assert not fast_bf16_available("cuda")  # measured slower for this encoder on an H100 (sentmtl/serving/precision.py)


def test_forward_on_the_gpu_matches_the_cpu(tiny_model, tiny_tokenizer):
    batch = tiny_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    tiny_model.eval()
    with torch.no_grad():
        cpu = tiny_model(**batch)
        gpu = tiny_model.to("cuda")(**{k: v.to("cuda") for k, v in batch.items()})
    torch.testing.assert_close(gpu.embeddings.cpu(), cpu.embeddings, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(gpu.logits.cpu(), cpu.logits, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_keeps_the_projection_and_the_norm_in_fp32(tiny_model, tiny_tokenizer, dtype):
    batch = {k: v.to("cuda") for k, v in tiny_tokenizer(SENTENCES, padding=True, return_tensors="pt").items()}
    model = tiny_model.to("cuda").eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        out = model(**batch)
    assert out.embeddings.dtype == torch.float32
    torch.testing.assert_close(out.embeddings.norm(dim=-1), torch.ones(len(SENTENCES), device="cuda"))


def test_encode_on_the_gpu_agrees_with_fp32_on_the_cpu(tiny_model, tiny_tokenizer):
    reference = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, precision="fp32", device="cpu")
    on_gpu = sentmtl.encode(tiny_model, SENTENCES, tiny_tokenizer, device="cuda", precision="bf16")
    assert next(tiny_model.parameters()).device.type == "cuda"
    cosine = (reference * on_gpu).sum(1)
    assert cosine.min() >= 0.999


def test_run_embed_runs_on_the_gpu_by_default(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch, capsys):
    import run_embed

    out = tmp_path / "trained"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--use_cpu", "false")) == 0
    moved = []
    original = torch.nn.Module.to
    monkeypatch.setattr(
        torch.nn.Module, "to", lambda self, *a, **k: (moved.append(str(a[0]) if a else ""), original(self, *a, **k))[1]
    )
    assert run_embed.main(["--model_name_or_path", str(out), "--output_file", str(tmp_path / "e.npy"), *SENTENCES]) == 0
    assert "cuda" in moved
    embeddings = np.load(tmp_path / "e.npy")
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-3)


def test_sentence_transformers_export_of_a_gpu_model(tiny_encoder_dir, synthetic_csv, tmp_path):
    from sentence_transformers import SentenceTransformer

    from sentmtl.serving.st_export import export_sentence_transformer

    out = tmp_path / "trained"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--use_cpu", "false")) == 0
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    model.to("cuda")
    export_sentence_transformer(model, tokenizer, tmp_path / "st")
    exported = SentenceTransformer(str(tmp_path / "st"), device="cuda").encode(SENTENCES)
    ours = sentmtl.encode(model, SENTENCES, tokenizer, precision="fp32")
    assert ((exported * ours).sum(1)).min() >= 0.9999


@pytest.mark.parametrize("precision", [["--bf16", "true"], ["--bf16", "false", "--fp16", "true"], ["--bf16", "false"]])
def test_training_on_the_gpu_in_each_precision(tiny_encoder_dir, synthetic_csv, tmp_path, precision):
    out = tmp_path / "run"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, out, "--use_cpu", "false", *precision)) == 0
    results = json.loads((out / "eval_results.json").read_text())
    assert np.isfinite(results["eval_loss"]) and results["eval_classification_accuracy"] >= 0.0
    train = json.loads((out / "train_results.json").read_text())
    assert np.isfinite(train["train_loss"])


def test_teacher_vectors_and_evaluation_run_on_the_gpu(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """#20 item 12: the distillation teacher ran on the CPU (at the CPU's precision) in a GPU run; and the
    evaluation's objective (learned loss weights on the GPU) must combine the tasks' losses there."""
    import sentmtl.serving.embed as embed_module

    seen = []
    original = embed_module.encode

    def spy(*args, **kwargs):
        seen.append((str(kwargs.get("device")), kwargs.get("precision")))
        return original(*args, **kwargs)

    monkeypatch.setattr(embed_module, "encode", spy)  # the teacher's (sentmtl.data.teacher_cache.Teacher.from_model)
    out = tmp_path / "run"
    assert (
        main(
            tiny_run_flags(
                tiny_encoder_dir,
                synthetic_csv,
                out,
                "--use_cpu",
                "false",
                "--bf16",
                "false",
                "--loss_weighting",
                "uncertainty",
            )
        )
        == 0
    )
    assert seen and all(device.startswith("cuda") and precision == "fp32" for device, precision in seen)
    results = json.loads((out / "eval_results.json").read_text())
    assert np.isfinite(results["eval_loss"]) and np.isfinite(results["eval_distillation_loss"])
