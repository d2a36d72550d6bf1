"""Code run in a process of its own: a saved model without the package (trust_remote_code, the pipeline), the
default install without onnx, run_embed.py / run_mtl.py as commands, and the glibc heap trim."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, SHARING_SENTENCES, retrieval_flags, retrieval_run_file, tiny_run_flags

import sentmtl
from sentmtl.training.run import main

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


def test_trust_remote_code_load_without_the_package(trained_dir, tmp_path):
    resaved = tmp_path / "resaved"
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(trained_dir), json.dumps(SHARING_SENTENCES), str(resaved)],
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
    ours = sentmtl.encode(
        model, SHARING_SENTENCES, tokenizer, precision="fp32"
    )  # the exact path (bf16 is an approximation)
    np.testing.assert_allclose(np.array(remote["embeddings"]), ours, atol=1e-5)
    for name in ("modeling_sentmtl.py", "configuration_sentmtl.py", "encoders.py", "model.safetensors"):
        assert (resaved / name).is_file(), name


def test_n_task_model_loads_without_the_package(trained_dir, tmp_path):
    """trust_remote_code: the code files (task_spec.py and losses.py too) travel with the weights."""
    script = (
        "import sys; sys.modules['sentmtl'] = None\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        f"m = AutoModel.from_pretrained({str(trained_dir)!r}, trust_remote_code=True).eval()\n"
        f"t = AutoTokenizer.from_pretrained({str(trained_dir)!r})\n"
        "out = m(**t(['the movie was great .'], return_tensors='pt'))\n"
        "print(sorted(out.task_logits), [x.name for x in m.tasks])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "['classification', 'sentiment'] ['classification', 'sentiment', 'distillation']" in result.stdout


def test_text_classification_pipeline_without_the_package(trained_dir, tmp_path):
    """The Hub widget's path: no sentmtl installed, config.json's auto_map names the sequence-classification view."""
    script = (
        "import sys; sys.modules['sentmtl'] = None\n"
        "from transformers import pipeline\n"
        f"print(pipeline('text-classification', model={str(trained_dir)!r}, trust_remote_code=True, device='cpu')"
        "('the movie was great .'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'label': 'positive'" in result.stdout or "'label': 'negative'" in result.stdout


def test_truncated_embeddings_agree_across_encode_run_embed_and_the_export(tiny_encoder_dir, retrieval_files, tmp_path):
    from sentence_transformers import SentenceTransformer

    import run_embed

    out = tmp_path / "run"
    assert (
        main(
            [
                str(retrieval_run_file(tmp_path, retrieval_files)),
                *retrieval_flags(tiny_encoder_dir, out, "--num_train_epochs", "1"),
            ]
        )
        == 0
    )
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(out))
    sentences = ["the movie was great .", "the food was very awful .", "the phone was fine ."]
    full = sentmtl.encode(model, sentences, tokenizer, precision="fp32")
    small = sentmtl.encode(model, sentences, tokenizer, precision="fp32", truncate_dim=8)
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(small, expected, atol=1e-6)
    assert (
        run_embed.main(
            [
                "--model_name_or_path",
                str(out),
                "--truncate_dim",
                "8",
                "--output_file",
                str(tmp_path / "e.npy"),
                "--precision",
                "fp32",
                *sentences,
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), small, atol=1e-6)
    assert (
        run_embed.main(
            [
                "--model_name_or_path",
                str(out),
                "--export_sentence_transformer",
                str(tmp_path / "st"),
                "--truncate_dim",
                "8",
            ]
        )
        == 0
    )
    exported = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(sentences)
    assert exported.shape == (3, 8)
    np.testing.assert_allclose(exported, small, atol=1e-5)
    with pytest.raises(ValueError, match="truncate_dim=17"):
        sentmtl.encode(model, sentences, tokenizer, truncate_dim=17)
    # Without the package: the config (contrastive task, Matryoshka) and the forward with pairs load from the folder.
    script = (
        "import sys, json, torch; sys.modules['sentmtl'] = None\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        "m = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
        "t = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "b = t(json.loads(sys.argv[2]), padding=True, return_tensors='pt')\n"
        "with torch.no_grad(): o = m(**b, pair_input_ids=b['input_ids'], pair_attention_mask=b['attention_mask'])\n"
        "print(json.dumps({'dims': m.config.matryoshka_dims, 'shape': list(o.task_outputs['retrieval'].shape),"
        " 'emb': o.embeddings.tolist()}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(out), json.dumps(sentences)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    remote = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert remote["dims"] == [16, 8] and remote["shape"] == [3, 2, 16]
    np.testing.assert_allclose(np.array(remote["emb"]), full, atol=1e-5)


def test_the_default_install_needs_no_onnx_package(tiny_encoder_dir, tmp_path):
    """Without the extra, importing sentmtl and embedding with the torch backend work (onnx is imported lazily)."""
    script = (
        "import sys\nfor name in ('onnx', 'onnxruntime', 'onnxscript'):\n    sys.modules[name] = None\n"
        "import run_embed\nsys.exit(run_embed.main(['--model_name_or_path', sys.argv[1], 'the food was great .']))"
    )
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", script, str(tiny_encoder_dir)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "size=" in done.stdout


def test_a_sentmtl_model_from_the_hub_cache_loads_as_sentmtl(tiny_encoder_dir, synthetic_csv, tmp_path):
    """`is_sentmtl_checkpoint` only looked for a local config.json, so `user/repo` was wrapped as a plain encoder and
    crashed. A Hub snapshot in HF_HOME, read offline, is what `from_pretrained("user/repo")` resolves to."""
    trained = tmp_path / "trained"
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, trained)) == 0
    home = tmp_path / "hf_home"
    repo = home / "hub" / "models--someone--tiny-sentmtl"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(trained, snapshot, ignore=shutil.ignore_patterns("checkpoint-*"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "run_embed.py"),
            "--model_name_or_path",
            "someone/tiny-sentmtl",
            "--device",
            "cpu",
            "the movie was great .",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "size=16" in result.stdout  # the trained 16-d projection, not a fresh one
    assert "plain encoder" not in result.stderr


def test_expected_user_errors_are_one_line_and_debug_shows_the_traceback(tmp_path):
    """Offline with no corpus, `make run` printed 15 lines of traceback before its message."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(REPO_ROOT / "run_mtl.py"), "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert lines == [lines[-1]] and "Offline mode is set" in lines[-1] and "--data_dir" in lines[-1]
    debug = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**env, "SENTMTL_DEBUG": "1"}, cwd=tmp_path
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConnectionError" in debug.stderr


FREED_HEAP = """
import ctypes
from sentmtl.utils.memory import release_memory
libc = ctypes.CDLL("libc.so.6")
def anonymous():
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
    return int(status["RssAnon"].split()[0]) * 1024
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
assert libc.mallopt(-1, 1 << 30) == 1  # M_TRIM_THRESHOLD: free() itself does not trim
blocks = [libc.malloc(64 * 1024) for _ in range(4000)]  # 256 MB of blocks under the mmap threshold: the heap
for block in blocks:
    ctypes.memset(block, 1, 64 * 1024)  # touched: resident
for block in blocks[:-1]:  # the heap's top stays in use: only a trim, not free(), can give the rest back
    libc.free(block)
before = anonymous()
release_memory(collect=False)
print(before - anonymous())
"""


def test_release_memory_returns_a_freed_heap_to_the_system():
    """What the callback relies on: glibc keeps freed blocks in its heap, resident, until trimmed. In a process of
    its own (an allocator setting it needs would outlive the test), without inherited MALLOC_* settings."""
    import os
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: nothing to trim")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run(
        [sys.executable, "-c", FREED_HEAP],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 200e6  # of the 256 MB freed


def test_importing_sentmtl_imports_no_02_path_and_no_run_side_module():
    """`import sentmtl` stays light: the model half only (and the alias finder)."""
    code = (
        "import sys, warnings; warnings.simplefilter('error', DeprecationWarning); import sentmtl; "
        "print(sorted(m for m in sys.modules if m.startswith('sentmtl.')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "sentmtl.training" not in loaded and "sentmtl.data." not in loaded, loaded
