"""Tasks as the unit of the model: every task type, the sampler, masks, run files with `tasks:`, sharing N tasks."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO_ROOT, synthetic_rows, tiny_run_flags

import sentmtl
from sentmtl.data.sampler import TaskBatchSampler
from sentmtl.model.task_spec import TaskSpec

ALL_TYPES = [
    {"name": "sentiment3", "type": "classification", "labels": ["neg", "mid", "pos"]},
    {"name": "tags", "type": "multilabel", "labels": ["food", "service", "price"]},
    {"name": "rating", "type": "score", "loss": "mse"},
    {"name": "stars", "type": "regression"},
    {"name": "paraphrase", "type": "similarity"},
    {"name": "keep", "type": "distillation"},
]


@pytest.fixture
def all_types_model(tiny_encoder_dir):
    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=ALL_TYPES, head_logit_scale=20.0
    )
    return model, tokenizer


def _batch(tokenizer, sentences):
    return {k: v for k, v in tokenizer(sentences, padding=True, return_tensors="pt").items()}


def test_every_task_type_builds_its_head_and_computes_its_loss(all_types_model):
    model, tokenizer = all_types_model
    sentences = ["the food was great .", "the service was bad .", "it was fine .", "the price was poor ."]
    batch = _batch(tokenizer, sentences)
    pair = {f"pair_{k}": v for k, v in _batch(tokenizer, sentences[::-1]).items()}
    assert model.sentiment3_head.out_features == 3 and model.tags_head.out_features == 3
    assert not hasattr(model, "paraphrase_head") and not hasattr(model, "keep_head")  # they train the embedding
    targets = {
        "sentiment3": torch.tensor([2, 0, 1, 0]),
        "tags": torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]]),
        "rating": torch.tensor([1.0, 0.0, 0.5, 0.1]),
        "stars": torch.tensor([4.5, 1.0, 3.0, 2.0]),
        "paraphrase": torch.tensor([0.2, 0.9, 0.9, 0.2]),
        "keep": torch.randn(4, 32),  # the teacher's pooled vectors (hidden 32)
    }
    out = model(**batch, **pair, task_labels=targets)
    assert set(out.task_losses) == set(targets)
    assert all(torch.isfinite(loss) for loss in out.task_losses.values())
    torch.testing.assert_close(out.loss, sum(out.task_losses.values()))  # static weights 1.0
    torch.testing.assert_close(out.logits, out.task_logits["sentiment3"])  # the first classification task
    out.loss.backward()
    assert model.shared_projection.weight.grad is not None and model.tags_head.weight.grad is not None


def test_only_the_tasks_in_the_batch_are_computed(all_types_model):
    model, tokenizer = all_types_model
    out = model(**_batch(tokenizer, ["the food was great .", "bad ."]), task_labels={"stars": torch.tensor([5.0, 1.0])})
    assert set(out.task_losses) == {"stars"}
    torch.testing.assert_close(out.loss, out.task_losses["stars"])
    model.zero_grad()
    out.loss.backward()
    assert model.sentiment3_head.weight.grad is None  # not zero-padded: never part of the graph


def test_absent_targets_are_masked(all_types_model):
    """-100 (class ids) and NaN (everything else) mark an example without a target for that task."""
    model, tokenizer = all_types_model
    model.eval()
    batch = _batch(tokenizer, ["the food was great .", "bad .", "fine ."])
    full = model(
        **batch,
        task_labels={"sentiment3": torch.tensor([2, 0, -100]), "rating": torch.tensor([1.0, 0.0, float("nan")])},
    )
    part = model(
        **{k: v[:2] for k, v in batch.items()},
        task_labels={"sentiment3": torch.tensor([2, 0]), "rating": torch.tensor([1.0, 0.0])},
    )
    torch.testing.assert_close(full.task_losses["sentiment3"], part.task_losses["sentiment3"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(full.task_losses["rating"], part.task_losses["rating"], rtol=1e-4, atol=1e-5)


def test_cosent_and_cosine_mse_reward_the_right_order():
    from sentmtl.model.task_types import cosent_loss, relational_distillation_loss, task_type

    scores = torch.tensor([0.9, 0.1, 0.5])
    assert cosent_loss(torch.tensor([0.8, 0.1, 0.4]), scores) < cosent_loss(torch.tensor([0.1, 0.8, 0.4]), scores)
    assert task_type("similarity").loss(TaskSpec("s", "similarity", loss="cosine_mse"), scores.clone(), scores) == 0
    teacher = torch.randn(5, 8)
    assert relational_distillation_loss(teacher * 3.0, teacher) < 1e-10  # scale-free: only the structure counts
    assert relational_distillation_loss(torch.randn(5, 8), teacher) > 0.05


def test_task_specs_are_validated_with_clear_messages():
    with pytest.raises(ValueError, match=r"unknown task field\(s\) \['lables'\]; valid: name, type, labels"):
        TaskSpec.from_dict({"name": "a", "type": "classification", "lables": ["x", "y"]})
    with pytest.raises(ValueError, match="type 'ranking' is not supported; choose one of classification"):
        TaskSpec("a", "ranking")
    with pytest.raises(ValueError, match="loss 'mse' does not fit a similarity task; choose one of cosent, cosine_mse"):
        TaskSpec("a", "similarity", loss="mse")
    with pytest.raises(ValueError, match="needs 2\\+ distinct label names"):
        TaskSpec("a", "classification", labels=["x"])
    with pytest.raises(ValueError, match="must be an identifier"):
        TaskSpec("my task", "score")


# -- the sampler ------------------------------------------------------------------------------------------------------


LENGTHS = [[3, 5, 2, 7, 1] * 8, [4, 2] * 6, [9] * 5]  # 40, 12 and 5 rows: 10, 3 and 2 batches of 4


@pytest.mark.parametrize("strategy", ["proportional", "round_robin", "temperature"])
def test_sampler_batches_stay_in_one_source_and_are_seeded_per_epoch(strategy):
    sampler = TaskBatchSampler(LENGTHS, 4, strategy, seed=3)
    offsets = [0, 40, 52, 57]
    first = list(sampler)
    assert len(first) == len(sampler)
    for batch in first:
        source = next(k for k in range(3) if offsets[k] <= batch[0] < offsets[k + 1])
        assert all(offsets[source] <= i < offsets[source + 1] for i in batch)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    sampler.set_epoch(0)
    assert list(sampler) == first  # a resumed epoch replays the same order
    assert list(TaskBatchSampler(LENGTHS, 4, strategy, seed=3)) == first


def test_sampler_strategies_share_steps_as_documented():
    def per_source(strategy, **kwargs):
        counts = [0, 0, 0]
        for batch in TaskBatchSampler(LENGTHS, 4, strategy, seed=0, **kwargs):
            counts[0 if batch[0] < 40 else 1 if batch[0] < 52 else 2] += 1
        return counts

    assert per_source("proportional") == [10, 3, 2]  # every batch once
    assert per_source("round_robin") == [2, 2, 2]  # in turn, until the smallest runs out
    hot = per_source("temperature", temperature=100.0)  # nearly uniform over sources
    assert sum(hot) == 15 and min(hot) >= 2
    assert per_source("temperature", temperature=1.0)[0] >= 7  # T = 1: ∝ size (40 of 57 rows: 10.5 of 15 expected)
    with pytest.raises(ValueError, match="task sampling 'mixed' is not supported"):
        TaskBatchSampler(LENGTHS, 4, "mixed")


# -- run files with tasks: ---------------------------------------------------------------------------------------------


@pytest.fixture
def two_datasets(tmp_path):
    """A 3-class file and a pair-similarity file: two tasks, each with its own data."""
    rows = synthetic_rows(48)
    three = tmp_path / "three.csv"
    three.write_text(
        "text,tone\n"
        + "".join(f"{s},{['neg', 'pos'][label]}\n" for s, label in zip(rows["sentence"], rows["label"]))
        + "".join(f"the plot was fine number {i} .,mid\n" for i in range(12))
    )
    pairs = tmp_path / "pairs.jsonl"
    with open(pairs, "w") as handle:
        # Disjoint pairs: a chain (s0, s1), (s1, s2), … would be one group for the leak-free split.
        for i, (a, b) in enumerate(zip(rows["sentence"][::2], rows["sentence"][1::2])):
            handle.write(json.dumps({"a": a, "b": b, "sim": round((i % 5) / 4, 2)}) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "num_train_epochs": 2,
                "per_device_train_batch_size": 8,
                "learning_rate": 1e-3,
                "task_sampling": "round_robin",
                "tasks": [
                    {
                        "name": "tone",
                        "type": "classification",
                        "labels": ["neg", "mid", "pos"],
                        "data": {"train_file": str(three)},
                        "text_column": "text",
                        "label_column": "tone",
                        "head_learning_rate": 5e-3,
                    },
                    {
                        "name": "sim",
                        "type": "similarity",
                        "data": {"train_file": str(pairs)},
                        "text_column": "a",
                        "text_pair_column": "b",
                        "label_column": "sim",
                        "loss": "cosine_mse",
                    },
                    {
                        "name": "keep",
                        "type": "distillation",
                        "data": {"train_file": str(three)},
                        "text_column": "text",
                        "loss_weight": 5,
                    },
                ],
            }
        )
    )
    return config


def tiny_task_flags(tiny_encoder_dir, out, *extra):
    return [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        *extra,
    ]


def test_a_run_file_with_tasks_trains_each_on_its_own_data(tiny_encoder_dir, two_datasets, tmp_path, capsys):
    from sentmtl.training.run import main

    out = tmp_path / "run"
    assert main([str(two_datasets), *tiny_task_flags(tiny_encoder_dir, out)]) == 0
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {
        "eval_tone_accuracy",
        "eval_tone_confusion_1_1",
        "eval_sim_spearman",
        "eval_keep_structure_spearman",
        "eval_loss",
    } <= set(metrics)
    config = json.loads((out / "config.json").read_text())
    assert [t["name"] for t in config["tasks"]] == ["tone", "sim", "keep"]
    assert config["id2label"] == {"0": "neg", "1": "mid", "2": "pos"}
    assert (out / "confusion_tone.png").is_file()
    card = (out / "README.md").read_text()
    assert "### Task `tone`" in card and "### Task `sim`" in card and "classification over neg, mid, pos" in card
    # The run file is replayed from run_config.yaml, tasks included.
    saved = yaml.safe_load((out / "run_config.yaml").read_text())
    assert [t["name"] for t in saved["tasks"]] == ["tone", "sim", "keep"]
    from sentmtl.training.run import parse_args

    _, data_args, _ = parse_args([str(out / "run_config.yaml"), "--output_dir", str(tmp_path / "again")])
    assert [t.spec.name for t in data_args.tasks] == ["tone", "sim", "keep"]


def test_run_file_task_errors_name_the_field_file_and_column(tiny_encoder_dir, two_datasets, tmp_path, capsys):
    from sentmtl.training.run import main

    bad = yaml.safe_load(two_datasets.read_text())
    bad["tasks"][0]["colour"] = "red"
    (tmp_path / "bad1.yaml").write_text(yaml.safe_dump(bad))
    assert main([str(tmp_path / "bad1.yaml"), *tiny_task_flags(tiny_encoder_dir, tmp_path / "o1")]) == 2
    assert "tasks[0]: unknown task field(s) ['colour']; valid:" in capsys.readouterr().err
    bad["tasks"][0].pop("colour")
    bad["tasks"][0]["label_column"] = "mood"
    (tmp_path / "bad2.yaml").write_text(yaml.safe_dump(bad))
    assert main([str(tmp_path / "bad2.yaml"), *tiny_task_flags(tiny_encoder_dir, tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert "three.csv (train): no column 'mood' for task 'tone'" in err and "set its label_column" in err
    assert (
        main([str(two_datasets), "--class_names", "a", "b", *tiny_task_flags(tiny_encoder_dir, tmp_path / "o3")]) == 2
    )
    assert "--class_names would be ignored. Move them into the tasks." in capsys.readouterr().err
    bad["tasks"][0]["label_column"] = "tone"
    bad["tasks"][1]["head_learning_rate"] = 1e-3  # a similarity task has no head: the LR would apply to nothing
    (tmp_path / "bad3.yaml").write_text(yaml.safe_dump(bad))
    assert main([str(tmp_path / "bad3.yaml"), *tiny_task_flags(tiny_encoder_dir, tmp_path / "o4")]) == 2
    assert "tasks[1]: head_learning_rate: a similarity task has no head" in capsys.readouterr().err


def test_freeze_a_task_head_and_give_a_head_its_own_lr(tiny_encoder_dir, two_datasets, tmp_path):
    from sentmtl.training.arguments import SentMtlTrainingArguments
    from sentmtl.training.trainer import build_param_groups

    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, tasks=ALL_TYPES[:3])
    args = SentMtlTrainingArguments(output_dir=str(tmp_path), use_cpu=True, head_learning_rate=1e-4)
    lr = {group["name"]: group["lr"] for group in build_param_groups(model, args, head_learning_rates={"tags": 3e-3})}
    assert lr["heads.tags"] == 3e-3 and lr["heads"] == 1e-4
    model.freeze("tags_head")
    assert not model.tags_head.weight.requires_grad and model.sentiment3_head.weight.requires_grad
    with pytest.raises(ValueError, match="cannot freeze 'nope_head'; choose one of all, backbone, sentiment3_head"):
        model.freeze("nope_head")


# -- sharing N tasks --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three_task_dir(tmp_path_factory, tiny_encoder_dir):
    from sentmtl.training.run import main

    tmp = tmp_path_factory.mktemp("n-tasks")
    rows = synthetic_rows(64)
    csv = tmp / "train.csv"
    csv.write_text(
        "text,sentiment\n"
        + "".join(f"{s},{['negative', 'positive'][label]}\n" for s, label in zip(rows["sentence"], rows["label"]))
    )
    out = tmp / "model"
    assert main(tiny_run_flags(tiny_encoder_dir, csv, out)) == 0  # classification + sentiment + distillation
    return out


def test_n_task_round_trip_with_the_package(three_task_dir):
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(three_task_dir))
    assert [t.name for t in model.tasks] == ["classification", "sentiment", "distillation"]
    rebuilt = sentmtl.SentMtlModel(model.config)
    rebuilt.load_state_dict(model.state_dict())
    batch = _batch(tokenizer, ["the movie was great ."])
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(
        model(**batch).task_logits["classification"], rebuilt(**batch).task_logits["classification"]
    )


def test_n_task_model_loads_without_the_package(three_task_dir, tmp_path):
    """trust_remote_code: the code files (tasks.py and losses.py too) travel with the weights."""
    script = (
        "import sys; sys.modules['sentmtl'] = None\n"
        "from transformers import AutoModel, AutoTokenizer\n"
        f"m = AutoModel.from_pretrained({str(three_task_dir)!r}, trust_remote_code=True).eval()\n"
        f"t = AutoTokenizer.from_pretrained({str(three_task_dir)!r})\n"
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


def test_text_classification_pipeline_serves_the_first_classification_task(three_task_dir):
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(three_task_dir), device="cpu")
    result = classify(["the movie was great .", "the food was awful !"])
    assert {r["label"] for r in result} <= {"negative", "positive"}
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(three_task_dir))
    model.eval()
    with torch.no_grad():
        probabilities = model(**_batch(tokenizer, ["the movie was great ."])).logits.softmax(-1)[0]
    assert result[0]["score"] == pytest.approx(float(probabilities.max()), abs=1e-5)


def test_text_classification_pipeline_without_the_package(three_task_dir, tmp_path):
    """The Hub widget's path: no sentmtl installed, config.json's auto_map names the sequence-classification view."""
    script = (
        "import sys; sys.modules['sentmtl'] = None\n"
        "from transformers import pipeline\n"
        f"print(pipeline('text-classification', model={str(three_task_dir)!r}, trust_remote_code=True, device='cpu')"
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


def test_export_of_an_n_task_model(three_task_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    import run_embed

    assert (
        run_embed.main(
            ["--model_name_or_path", str(three_task_dir), "--export_sentence_transformer", str(tmp_path / "st")]
        )
        == 0
    )
    sentences = ["the movie was great .", "the food was awful !"]
    exported = SentenceTransformer(str(tmp_path / "st"), device="cpu").encode(sentences)
    ours = sentmtl.encode(str(three_task_dir), sentences, precision="fp32", device="cpu")
    assert ((exported * ours).sum(1)).min() >= 0.9999


def test_a_checkpoint_saved_before_tasks_still_loads(tiny_encoder_dir, tmp_path):
    """config.json without `tasks` / `head_logit_scale`, heads named classification_head / sentiment_head."""
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for key in ("tasks", "head_logit_scale"):
        config.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(tmp_path)
    loaded, _ = sentmtl.load_model_and_tokenizer(str(tmp_path))
    assert [t.name for t in loaded.tasks] == ["classification", "sentiment"]
    assert loaded.classification_head.logit_scale is None
    torch.testing.assert_close(loaded.classification_head.weight, model.classification_head.weight)


@pytest.mark.real_encoder
@pytest.mark.slow
def test_real_encoder_two_datasets_corpus_and_stsb(data_dir, tmp_path):
    """The bundled encoder on the corpus and STS-B pairs together (a short slice of configs/multitask_sts.yaml)."""
    from sentmtl.training.run import main

    stsb = REPO_ROOT.parent / "shared" / "data" / "stsbenchmark"
    if not (stsb / "sts-train.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs STS-B at {stsb}")
        pytest.skip(f"STS-B not found at {stsb}")
    out = tmp_path / "real"
    flags = [
        str(REPO_ROOT / "configs" / "multitask_sts.yaml"),
        "--data_dir",
        str(data_dir),
        "--max_samples",
        "320",
        "--num_train_epochs",
        "1",
        "--output_dir",
        str(out),
        "--disable_tqdm",
        "true",
        "--use_cpu",
        "true",
        "--sts_eval_file",
        str(stsb / "sts-dev.csv"),
    ]
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)  # the config names STS-B relative to the repository
    try:
        assert main(flags) == 0
    finally:
        os.chdir(cwd)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_classification_accuracy"] >= 0.75
    assert metrics["eval_sts_spearman"] >= 0.8 and metrics["eval_stsb_spearman"] >= 0.8
    # Both corpora are distilled: the STS-B sentences keep the starting encoder's structure too.
    assert (
        metrics["eval_distillation_structure_spearman"] > 0.5
        and metrics["eval_sts_distillation_structure_spearman"] > 0.5
    )
    # The config's model keys reach the saved model: the 384-d projection that started as the identity.
    config = json.loads((out / "config.json").read_text())
    assert (config["embedding_size"], config["projection_init"]) == (384, "identity")


def test_a_bad_value_names_the_file_line_and_column(tmp_path):
    from sentmtl.data.plan import DataSpec, RunTask
    from sentmtl.data.sources import build_sources
    from sentmtl.training.arguments import DataArguments

    path = tmp_path / "tone.csv"
    path.write_text("text,tone\nthe food was great .,pos\nthe plot was bad .,angry\n")
    task = RunTask(
        TaskSpec("tone", "classification", labels=["neg", "pos"]),
        DataSpec({"train_file": str(path)}, text_column="text", label_column="tone"),
    )
    with pytest.raises(ValueError, match=r"tone.csv \(train\), line 3, column 'tone': label 'angry' is not one of"):
        build_sources([task], DataArguments(), seed=0)


def test_each_process_takes_its_share_of_the_same_global_batch():
    """Under DDP every process trains the same source at the same step, and 2 × b rows are the rows of one batch of
    2b (accelerate's own sharding gave processes different sources' batches and never advanced the epoch)."""
    from sentmtl.data.sampler import RankBatches

    inner = TaskBatchSampler(LENGTHS, 8, "round_robin", seed=1)
    shares = [list(RankBatches(inner, 2, rank)) for rank in (0, 1)]
    for global_batch, a, b in zip(inner, *shares):
        assert abs(len(a) - len(b)) <= 1 and sorted(a + b) == sorted(global_batch)
    # One batch of 3 rows over 2 processes: shares of 2 and 1, no row repeated (a repeated row would count twice in
    # a loss that compares the rows of the gathered batch).
    odd = TaskBatchSampler([[1, 2, 3]], 8, within="sequential", min_batch_size=2)
    assert [list(RankBatches(odd, 2, r)) for r in (0, 1)] == [[[0, 2]], [[1]]]
    # A source's last batch smaller than the process count joins the one before it: every process gets a row.
    tail = TaskBatchSampler([[1] * 9], 4, within="sequential", min_batch_size=2)
    assert list(tail) == [[0, 1, 2, 3], [4, 5, 6, 7, 8]] and len(tail) == 2
    with pytest.raises(ValueError, match="fewer rows than the 2 processes"):
        TaskBatchSampler([[1]], 4, min_batch_size=2)
    wrapper = RankBatches(inner, 2, 0)
    wrapper.set_epoch(3)
    assert inner.epoch == 3
