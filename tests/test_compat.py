"""Backward compatibility: tiny models saved by sentmtl 0.1.0, 0.2.0 and the tree before the restructure (a428481)
load with the outputs those versions computed, and a428481's mid-run checkpoint resumes to the metrics of its
uninterrupted run. The fixtures and how they were made: tests/fixtures/make_compat_fixtures.py."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import sentmtl

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SAVED_MODELS = sorted(path.parent for path in (FIXTURES / "saved_models").glob("*/*/expected.json"))
CHECKPOINT_FIXTURE = FIXTURES / "checkpoint_a428481"
# Within 1e-6 of the output's scale (its largest |value|, when above 1): a CPU with other matmul kernels (AMX against
# AVX-512) sums in another order, and float32 error grows with the magnitudes summed, not with one entry's. Measured on
# such a CPU: 3.8e-6 on logits reaching 19.8 (the scaled sentiment head), 1.5e-6 on logits reaching 3.0; the
# normalised embeddings within 1e-6; 0.0 on the machine that wrote the fixtures.
ATOL = 1e-6
# Output fields whose values are dicts by task name: the new tree must give exactly the old tasks.
BY_TASK = ("task_logits", "task_outputs")


def test_every_version_has_its_fixtures():
    found = {(path.parent.name, path.name) for path in SAVED_MODELS}
    versions = ("0.1.0", "0.2.0", "a428481")
    assert found == {(version, name) for version in versions for name in ("default", "multitask")}
    assert (CHECKPOINT_FIXTURE / "expected.json").is_file()


def forward_outputs(model, tokenizer, sentences, pairs) -> dict:
    """The new tree's forward pass as make_compat_fixtures.py took the old one's: fp32, eval mode, one padded batch,
    without and with sentence pairs."""
    model.float().eval()
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    second = tokenizer(pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        single = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        )
        paired = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            pair_input_ids=second["input_ids"],
            pair_attention_mask=second["attention_mask"],
            pair_token_type_ids=second["token_type_ids"],
        )
    return {"single": dict(single.items()), "pairs": dict(paired.items())}


def compare(got: dict, expected: dict) -> dict:
    """Every field the old version returned, within ATOL of it (relative to its scale above 1); {field path: max
    |difference| / max(1, max |value|)}."""
    differences = {}
    for mode, fields in expected.items():
        for name, want in fields.items():
            assert name in got[mode], f"{mode}: the new tree's output has no {name!r} (has {sorted(got[mode])})"
            value = got[mode][name]
            if name in BY_TASK:
                assert sorted(value) == sorted(want), f"{mode} {name}: tasks {sorted(value)}, expected {sorted(want)}"
                pairs = [(f"{mode}.{name}.{task}", value[task], want[task]) for task in want]
            else:
                pairs = [(f"{mode}.{name}", value, want)]
            for where, tensor, reference in pairs:
                array, reference = tensor.detach().double().numpy(), np.asarray(reference, dtype=np.float64)
                assert array.shape == reference.shape, f"{where}: shape {array.shape}, expected {reference.shape}"
                scale = max(1.0, float(np.abs(reference).max())) if reference.size else 1.0
                differences[where] = float(np.abs(array - reference).max()) / scale if array.size else 0.0
    too_far = {where: diff for where, diff in differences.items() if not diff <= ATOL}
    assert not too_far, f"outputs beyond {ATOL}: {too_far}"
    return differences


@pytest.mark.parametrize("path", SAVED_MODELS, ids=lambda path: f"{path.parent.name}-{path.name}")
def test_saved_model_loads_with_the_outputs_its_version_computed(path):
    expected = json.loads((path / "expected.json").read_text())
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(path))
    assert isinstance(model, sentmtl.SentMtlModel)
    assert model.config.embedding_size == 16
    compare(forward_outputs(model, tokenizer, expected["sentences"], expected["pairs"]), expected["outputs"])


@pytest.mark.parametrize("path", SAVED_MODELS, ids=lambda path: f"{path.parent.name}-{path.name}")
def test_saved_model_loads_through_automodel(path):
    """With sentmtl imported, `AutoModel` resolves model_type "sentmtl" to the installed class (the fixtures keep no
    code files for trust_remote_code)."""
    expected = json.loads((path / "expected.json").read_text())
    model = transformers.AutoModel.from_pretrained(str(path))
    assert type(model) is sentmtl.SentMtlModel
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
    compare(forward_outputs(model, tokenizer, expected["sentences"], expected["pairs"]), expected["outputs"])


def test_checkpoint_training_args_unpickle_in_the_new_tree():
    """training_args.bin pickles `sentmtl.arguments.SentMtlTrainingArguments`, an old module path."""
    from sentmtl.training.arguments import SentMtlTrainingArguments

    expected = json.loads((CHECKPOINT_FIXTURE / "expected.json").read_text())
    args = torch.load(CHECKPOINT_FIXTURE / expected["checkpoint"] / "training_args.bin", weights_only=False)
    assert type(args) is SentMtlTrainingArguments
    assert (args.save_steps, args.per_device_train_batch_size, args.num_train_epochs) == (10, 8, 2.0)


def test_a428481_checkpoint_resumes_to_the_uninterrupted_metrics(tmp_path):
    from sentmtl.training.run import main

    expected = json.loads((CHECKPOINT_FIXTURE / "expected.json").read_text())
    fixture = tmp_path / "fixture"
    shutil.copytree(CHECKPOINT_FIXTURE, fixture)
    out = tmp_path / "resumed"
    paths = {"<encoder>": fixture / "encoder", "<train_file>": fixture / "train.csv", "<output_dir>": out}
    flags = [str(paths.get(flag, flag)) for flag in expected["run_flags"]]
    checkpoint = fixture / expected["checkpoint"]
    assert main([*flags, "--resume_from_checkpoint", str(checkpoint)]) == 0

    # It continued the checkpoint (the old run's history up to step 10 is in the new run's last state) …
    state = json.loads((out / "checkpoint-14" / "trainer_state.json").read_text())
    old_state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["global_step"] == 14
    assert state["log_history"][: len(old_state["log_history"])] == old_state["log_history"]
    # … and ended where the uninterrupted old run did. The new tree names the binary F1 after the class it measures
    # (eval_classification_f1_positive); the old key stays as an alias, and the old keys are compared.
    results = json.loads((out / "eval_results.json").read_text())
    differences = {key: abs(results[key] - want) for key, want in expected["final_eval"].items()}
    assert all(diff <= ATOL for diff in differences.values()), (differences, results)
    assert results["eval_classification_f1_positive"] == results["eval_classification_f1"]
