"""The silent wrong results of #20, one regression test per item (named `test_item_<n>_…`), and the four open points it
asked to decide. Each failed on the code before the one-design change; tiny random encoders, seconds each."""

import csv
import json
import math

import datasets
import numpy as np
import pytest
import torch
import yaml
from conftest import synthetic_rows

import sentmtl
from sentmtl.data.batching import prepare
from sentmtl.data.plan import DataSpec, RunTask, tasks_from_flags
from sentmtl.data.sources import TARGET_PREFIX, build_sources
from sentmtl.data.split import train_test_split
from sentmtl.model.task_spec import TaskSpec
from sentmtl.model.task_types import relational_distillation_loss
from sentmtl.tasks.io import LabelMap, reliability_points, task_io, task_metrics
from sentmtl.training.arguments import DataArguments, SentMtlTrainingArguments
from sentmtl.training.run import main, parse_args
from sentmtl.training.trainer import SentMtlTrainer


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def args_for(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=2,
        max_steps=2,
        learning_rate=1e-3,
        eval_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        report_to="none",
    )
    values.update(overrides)
    return SentMtlTrainingArguments(**values)


def model_with(tiny_encoder_dir, tasks, **config):
    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir), embedding_size=16, tasks=[t.to_dict() for t in tasks], **config
    )
    return model, tokenizer


# -- 1. one label rule -------------------------------------------------------------------------------------------------


def test_item_1_digit_and_case_class_names_get_the_right_ids(tmp_path):
    stars = LabelMap(["1", "2", "3", "4", "5"])
    assert [stars(v, "x") for v in (1, 2, 3, 4, 5, "5", 5.0)] == [0, 1, 2, 3, 4, 4, 4]  # names, not ids
    flipped = LabelMap(["1", "0"])
    assert flipped(1, "x") == 0 and flipped("0", "x") == 1
    cased = LabelMap(["B", "b", "c"])
    assert [cased(v, "x") for v in ("B", "b", "C", " c ")] == [0, 1, 2, 2]
    with pytest.raises(ValueError, match=r"f.csv, line 3: label 'ab' matches \['Ab', 'aB'\] when case"):
        LabelMap(["Ab", "aB"])("ab", "f.csv, line 3")
    with pytest.raises(
        ValueError, match=r"label 7 is not one of the names \['1', '2', '3', '4', '5'\] \(numbers are names"
    ):
        stars(7, "x")
    assert LabelMap(["neg", "pos"])(1, "x") == 1  # no name is an integer: an integer is a class id
    # Multilabel takes the same rule.
    tags = TaskSpec("tags", "multilabel", labels=["1", "0"])
    assert task_io(tags).parse(tags, ["1", "0,1", ""], lambda row: f"row {row}")[:2] == [[1.0, 0.0], [1.0, 1.0]]
    # The --class_names path is a task definition like any other: star ratings 1..5 map to their own names, and the
    # derived score is id / (K − 1).
    path = write_csv(
        tmp_path / "stars.csv", ["sentence", "label"], [[f"the film was good {i} .", i] for i in range(1, 6)] * 4
    )
    model_args, data_args, training_args = parse_args(
        [
            "--train_file",
            str(path),
            "--class_names",
            "1",
            "2",
            "3",
            "4",
            "5",
            "--output_dir",
            str(tmp_path / "o"),
            "--use_cpu",
            "true",
        ]
    )
    source = build_sources(tasks_from_flags(model_args, data_args, training_args), data_args, 0)[0]
    rows = source.train.to_list() + source.eval.to_list()
    for row in rows:
        star = int(row["text"].split()[-2])
        assert row[TARGET_PREFIX + "classification"] == star - 1
        assert row[TARGET_PREFIX + "sentiment"] == pytest.approx((star - 1) / 4)


# -- 2. a task's own label smoothing ----------------------------------------------------------------------------------


def test_item_2_a_tasks_label_smoothing_survives_the_trainer(tiny_encoder_dir, synthetic_csv, tmp_path):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {
                        "name": "tone",
                        "type": "classification",
                        "labels": ["negative", "positive"],
                        "label_smoothing": 0.2,
                        "data": {"train_file": str(synthetic_csv)},
                        "text_column": "text",
                        "label_column": "sentiment",
                    }
                ]
            }
        )
    )
    out = tmp_path / "run"
    assert (
        main(
            [
                str(run_file),
                "--model_name_or_path",
                str(tiny_encoder_dir),
                "--embedding_size",
                "16",
                "--max_steps",
                "2",
                "--output_dir",
                str(out),
                "--use_cpu",
                "true",
                "--disable_tqdm",
                "true",
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["tasks"][0]["label_smoothing"] == 0.2
    assert yaml.safe_load((out / "run_config.yaml").read_text())["tasks"][0]["label_smoothing"] == 0.2
    # A run-wide --label_smoothing_factor beside tasks is refused, not silently applied or dropped.
    assert main([str(run_file), "--label_smoothing_factor", "0.1", "--output_dir", str(tmp_path / "o2")]) == 2


# -- 3. EMA and the best checkpoint -------------------------------------------------------------------------------------


def test_item_3_ema_with_load_best_model_at_end_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--ema_decay with --load_best_model_at_end"):
        parse_args(
            [
                "--ema_decay",
                "0.99",
                "--load_best_model_at_end",
                "true",
                "--eval_strategy",
                "epoch",
                "--save_strategy",
                "epoch",
                "--output_dir",
                str(tmp_path),
                "--use_cpu",
                "true",
            ]
        )


# -- 4, 5, 6. one evaluation path ---------------------------------------------------------------------------------------


def regression_table(n, missing_every=3, offset=0.0):
    rows = synthetic_rows(n)
    values = [float("nan") if i % missing_every == 0 else i + offset for i in range(n)]
    return datasets.Dataset.from_dict({"sentence": rows["sentence"], "value": values, "label": rows["label"]})


def test_item_4_eval_loss_is_over_the_rows_the_metric_sees(tiny_encoder_dir, tmp_path):
    tasks = [TaskSpec("val", "regression")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks)
    table = prepare(regression_table(11), tasks, tokenizer, label_columns={"val": "value"})
    trainer = SentMtlTrainer(model=model, args=args_for(tmp_path), eval_dataset=table, processing_class=tokenizer)
    metrics = trainer.evaluate()
    assert metrics["eval_val_loss"] == pytest.approx(metrics["eval_val_mse"], rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_val_loss"], rel=1e-6)


def test_item_5_evaluate_honours_the_dataset_it_is_given(tiny_encoder_dir, tmp_path):
    tasks = [TaskSpec("val", "regression")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks)
    own = prepare(regression_table(8), tasks, tokenizer, label_columns={"val": "value"})
    other = prepare(regression_table(8, offset=100.0), tasks, tokenizer, label_columns={"val": "value"})
    trainer = SentMtlTrainer(model=model, args=args_for(tmp_path), eval_dataset=own, processing_class=tokenizer)
    on_other = trainer.evaluate(eval_dataset=other)
    reference = SentMtlTrainer(model=model, args=args_for(tmp_path), eval_dataset=other, processing_class=tokenizer)
    assert on_other["eval_val_mse"] == pytest.approx(reference.evaluate()["eval_val_mse"])
    assert on_other["eval_val_mse"] != pytest.approx(trainer.evaluate()["eval_val_mse"])


def test_item_6_eval_loss_is_the_learned_weighting_training_minimises(tiny_encoder_dir, tmp_path):
    tasks = [
        TaskSpec("classification", "classification", labels=["negative", "positive"]),
        TaskSpec("val", "regression"),
    ]
    model, tokenizer = model_with(tiny_encoder_dir, tasks, loss_weighting="uncertainty")
    with torch.no_grad():
        model.loss_log_variances.copy_(torch.tensor([1.0, -0.5]))
    table = prepare(regression_table(8), tasks, tokenizer, label_columns={"val": "value"})
    metrics = SentMtlTrainer(
        model=model, args=args_for(tmp_path), eval_dataset=table, processing_class=tokenizer
    ).evaluate()
    a, b = metrics["eval_classification_loss"], metrics["eval_val_loss"]
    expected = math.exp(-1.0) * a + 0.5 + math.exp(0.5) * b - 0.25
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["eval_loss"] != pytest.approx(a + b, rel=1e-3)


# -- 7. each task reads its own text column ----------------------------------------------------------------------------


def test_item_7_tasks_sharing_a_file_read_their_own_text_columns(tmp_path):
    path = write_csv(
        tmp_path / "posts.csv",
        ["title", "body", "label"],
        [[f"title {i}", f"the body of post {i}", ["neg", "pos"][i % 2]] for i in range(20)],
    )
    tasks = [
        RunTask(TaskSpec("a", "classification", labels=["neg", "pos"]), DataSpec({"train_file": str(path)}, "title")),
        RunTask(TaskSpec("b", "classification", labels=["neg", "pos"]), DataSpec({"train_file": str(path)}, "body")),
    ]
    sources = build_sources(tasks, DataArguments(), seed=0)
    assert [[t.name for t in s.tasks] for s in sources] == [["a"], ["b"]]
    assert all(text.startswith("title") for text in sources[0].train["text"])
    assert all(text.startswith("the body") for text in sources[1].train["text"])


# -- 8. flags a tasks: file would leave unused ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--distillation_weight", "0"], "--distillation_weight would be ignored"),
        (["--max_samples", "10"], r"no task reads the UCI corpus \(data: uci\), so --max_samples would be ignored"),
        (["--sources", "imdb"], r"no task reads the UCI corpus \(data: uci\), so --sources would be ignored"),
    ],
)
def test_item_8_flags_a_tasks_file_overrides_are_refused(synthetic_csv, tmp_path, flags, message):
    run_file = tmp_path / "run.yaml"
    run_file.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {
                        "name": "tone",
                        "type": "classification",
                        "labels": ["a", "b"],
                        "data": {"train_file": str(synthetic_csv)},
                    }
                ]
            }
        )
    )
    with pytest.raises(ValueError, match=message):
        parse_args([str(run_file), *flags, "--output_dir", str(tmp_path / "o"), "--use_cpu", "true"])


# -- 9, 10. metrics that fit the targets and the data ------------------------------------------------------------------


def test_item_9_binary_score_metrics_are_not_reported_for_soft_targets():
    score = TaskSpec("s", "score")
    soft = np.array([0.2, 0.4, 0.6, 0.8])
    perfect = np.log(soft / (1 - soft))
    metrics = task_metrics(score, perfect, soft)
    assert metrics["mse"] == pytest.approx(0.0, abs=1e-12) and metrics["spearman"] == pytest.approx(1.0)
    assert not {"brier", "ece", "roc_auc", "accuracy"} & set(metrics)
    assert reliability_points(score, perfect, soft) is None
    binary = task_metrics(score, np.array([-2.0, 2.0, -1.0, 3.0]), np.array([0.0, 1.0, 0.0, 1.0]))
    assert binary["roc_auc"] == 1.0 and "brier" in binary and "ece" in binary


def test_item_10_an_integer_source_column_is_not_named_amazon_imdb_yelp(tmp_path):
    rows = [[f"the film was {['bad', 'good'][i % 2]} {i} .", i % 2, i % 3] for i in range(30)]
    numbers = write_csv(tmp_path / "numbers.csv", ["sentence", "label", "source"], rows)
    names = write_csv(
        tmp_path / "names.csv",
        ["sentence", "label", "source"],
        [[s, label, ["shop", "blog", "news"][d]] for s, label, d in rows],
    )
    task = TaskSpec("tone", "classification", labels=["neg", "pos"])
    for path, expected in ((numbers, []), (names, ["blog", "news", "shop"])):
        source = build_sources([RunTask(task, DataSpec({"train_file": str(path)}))], DataArguments(), seed=0)[0]
        assert source.domain_names == expected
        targets = np.array(source.eval[TARGET_PREFIX + "tone"])
        metrics = task_metrics(task, np.eye(2)[targets], targets, np.array(source.eval["domain"]), source.domain_names)
        assert {k for k in metrics if k.startswith("accuracy_")} == {
            f"accuracy_{n}" for n in expected if n in {expected[d] for d in source.eval["domain"]}
        }


# -- 11. a batch without targets for a task ---------------------------------------------------------------------------


def test_item_11_a_batch_where_no_row_has_a_tasks_target_trains_on(all_types_model):
    model, tokenizer = all_types_model
    batch = tokenizer(["the food was great .", "bad ."], padding=True, return_tensors="pt")
    nan = float("nan")
    targets = {
        "sentiment3": torch.tensor([-100, -100]),
        "tags": torch.full((2, 2), nan),
        "rating": torch.tensor([nan, nan]),
        "stars": torch.tensor([nan, nan]),
    }
    out = model(**batch, task_labels=targets)
    assert torch.isfinite(out.loss) and all(float(v) == 0.0 for v in out.task_losses.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.fixture
def all_types_model(tiny_encoder_dir):
    tasks = [
        TaskSpec("sentiment3", "classification", labels=["neg", "mid", "pos"]),
        TaskSpec("tags", "multilabel", labels=["food", "service"]),
        TaskSpec("rating", "score"),
        TaskSpec("stars", "regression"),
    ]
    return model_with(tiny_encoder_dir, tasks)


# -- 12. teacher vectors and evaluation follow the run's device and precision -------------------------------------------


def test_item_12_teacher_vectors_follow_the_runs_precision(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    import sentmtl.serving.embed as embed_module

    seen = []
    original = embed_module.encode

    def spy(*args, **kwargs):
        seen.append((kwargs.get("precision"), str(kwargs.get("device"))))
        return original(*args, **kwargs)

    monkeypatch.setattr(embed_module, "encode", spy)  # the teacher's (sentmtl.data.teacher_cache.Teacher.from_model)
    flags = [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--train_file",
        str(synthetic_csv),
        "--text_column",
        "text",
        "--label_column",
        "sentiment",
        "--embedding_size",
        "16",
        "--max_steps",
        "1",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
    ]
    for bf16, expected in (("false", "fp32"), ("true", "bf16")):
        seen.clear()
        assert main([*flags, "--bf16", bf16, "--output_dir", str(tmp_path / bf16)]) == 0
        assert seen and all(precision == expected and device == "cpu" for precision, device in seen)


def test_item_12_encode_moves_the_model_outside_inference_mode(tiny_model, tiny_tokenizer):
    """Found on the GPU: the teacher's `encode(device=cuda)` moved the model inside inference mode, its parameters
    became inference tensors, and the first training step failed ("Inference tensors cannot be saved for backward")."""
    seen = []
    move = tiny_model.to
    tiny_model.to = lambda *a, **k: seen.append(torch.is_inference_mode_enabled()) or move(*a, **k)
    sentmtl.encode(tiny_model, ["the film was good ."], tiny_tokenizer, device="cpu")
    assert seen == [False]
    assert not any(p.is_inference() for p in tiny_model.parameters())


# -- 13. the relational loss's weight does not depend on the batch size -------------------------------------------------


def test_item_13_relational_distillation_leaves_out_the_diagonal():
    torch.manual_seed(0)
    for rows in (2, 5, 16):
        teacher = torch.randn(rows, 8)
        student = torch.randn(rows, 6)
        s = torch.nn.functional.normalize(student, dim=-1)
        t = torch.nn.functional.normalize(teacher, dim=-1)
        off = ~torch.eye(rows, dtype=torch.bool)
        expected = ((s @ s.T - t @ t.T)[off] ** 2).mean()
        assert relational_distillation_loss(student, teacher) == pytest.approx(float(expected), rel=1e-5)
    assert float(relational_distillation_loss(torch.randn(1, 6), torch.randn(1, 8))) == 0.0  # one row: no pair


# -- 14. reliability diagrams of K classes ------------------------------------------------------------------------------


def test_item_14_the_reliability_diagram_of_four_classes_shows_confidences_below_one_half(tmp_path, monkeypatch):
    import matplotlib.axes

    from sentmtl.training.report import plot_reliability

    limits = []
    original = matplotlib.axes.Axes.set_xlim
    monkeypatch.setattr(
        matplotlib.axes.Axes, "set_xlim", lambda self, *a, **k: limits.append(a) or original(self, *a, **k)
    )
    task = TaskSpec("topic", "classification", labels=["a", "b", "c", "d"])
    logits = np.array([[0.5, 0.4, 0.3, 0.2], [0.1, 0.9, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.3, 0.2]])
    confidences, outcomes = reliability_points(task, logits, np.array([0, 1, 2, 2]))
    assert confidences.min() < 0.5
    plot_reliability(confidences, outcomes, tmp_path / "r.png", task)
    low, high = limits[-1]
    assert low == pytest.approx(0.25) and high == 1 and (confidences >= low).all()


# -- 15. building the trainer in Python on one's own table ---------------------------------------------------------------


def test_item_15_the_python_path_on_a_users_own_table_trains_and_evaluates(tiny_encoder_dir, tmp_path):
    tasks = [
        TaskSpec("classification", "classification", labels=["negative", "positive"]),
        TaskSpec("sentiment", "score"),
    ]
    model, tokenizer = model_with(tiny_encoder_dir, tasks)
    rows = synthetic_rows(24)
    table = datasets.Dataset.from_dict({**rows, "score": [float(label) for label in rows["label"]]})
    data = prepare(table, model.tasks, tokenizer)
    trainer = SentMtlTrainer(
        model=model,
        args=args_for(tmp_path, max_steps=3),
        train_dataset=data,
        eval_dataset=data,
        processing_class=tokenizer,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert {"eval_classification_accuracy", "eval_sentiment_roc_auc", "eval_loss"} <= set(metrics)


# -- 16. a file says "no target on this row" with an empty cell -----------------------------------------------------------


def test_item_16_empty_cells_mark_rows_without_a_target(tiny_encoder_dir, tmp_path):
    rows = synthetic_rows(20)
    path = write_csv(
        tmp_path / "mixed.csv",
        ["sentence", "label", "rating"],
        [
            [s, ["negative", "positive"][label] if i % 3 else "", f"{label * 0.8 + 0.1:.1f}" if i % 2 else ""]
            for i, (s, label) in enumerate(zip(rows["sentence"], rows["label"]))
        ],
    )
    tasks = [
        RunTask(
            TaskSpec("tone", "classification", labels=["negative", "positive"]), DataSpec({"train_file": str(path)})
        ),
        RunTask(TaskSpec("rating", "score"), DataSpec({"train_file": str(path)}, label_column="rating")),
    ]
    source = build_sources(tasks, DataArguments(), seed=0)[0]
    table = datasets.concatenate_datasets([source.train, source.eval])
    assert sum(v == -100 for v in table[TARGET_PREFIX + "tone"]) == 7  # rows 0, 3, …, 18
    assert sum(math.isnan(v) for v in table[TARGET_PREFIX + "rating"]) == 10
    bad = write_csv(tmp_path / "bad.csv", ["sentence", "rating"], [["fine .", "high"]])
    with pytest.raises(ValueError, match=r"bad.csv \(train\), line 2, column 'rating': 'high' is not a number"):
        build_sources(
            [RunTask(TaskSpec("rating", "score"), DataSpec({"train_file": str(bad)}, label_column="rating"))],
            DataArguments(),
            seed=0,
        )


# -- the open points -------------------------------------------------------------------------------------------------------


def test_open_point_pairs_are_split_by_both_sentences():
    """A second sentence that is another pair's first (or second) sentence keeps both pairs on one side."""
    first = [f"sentence {i}" for i in range(40)]
    second = [f"other {i}" for i in range(40)]
    second[7] = first[3]  # pair 7 shares a sentence with pair 3
    second[20] = second[30]  # pairs 20 and 30 share their second sentence
    table = datasets.Dataset.from_dict({"text": first, "text_pair": second, "label": [i % 2 for i in range(40)]})
    for seed in range(10):
        split = train_test_split(table, 0.3, seed, text_column=["text", "text_pair"], label_column="label")
        test = set(split["test"]["text"])
        assert ("sentence 3" in test) == ("sentence 7" in test)
        assert ("sentence 20" in test) == ("sentence 30" in test)


def test_open_point_the_distillation_teacher_is_a_choice(tiny_encoder_dir, tmp_path):
    """Unset: the model as the run starts (a continued run: the checkpoint's encoder); `teacher:` names another."""
    from sentmtl.serving.embed import encode
    from sentmtl.training.run import teacher_encoder

    model, tokenizer = model_with(tiny_encoder_dir, [TaskSpec("d", "distillation")])
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.5)  # the model has moved away from the original encoder
    sentences = ["the film was good .", "bad ."]
    kwargs = {"precision": "fp32", "device": "cpu"}
    own = teacher_encoder(model, tokenizer, None, 64, **kwargs).encode(sentences)
    original = teacher_encoder(model, tokenizer, str(tiny_encoder_dir), 64, **kwargs).encode(sentences)
    fresh, fresh_tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir))
    np.testing.assert_allclose(own, encode(model, sentences, tokenizer, pooled=True, **kwargs), rtol=1e-6)
    np.testing.assert_allclose(original, encode(fresh, sentences, fresh_tokenizer, pooled=True, **kwargs), rtol=1e-6)
    assert not np.allclose(own, original)
    with pytest.raises(ValueError, match="teacher is for distillation tasks only"):
        RunTask.from_dict({"name": "a", "type": "regression", "teacher": "x"}, "tasks[0]")


# -- compatibility ------------------------------------------------------------------------------------------------------

# run_config.yaml as sentmtl 0.1.0 wrote it (a --train_file run with --label_smoothing_factor 0.1).
OLD_RUN_CONFIG = """\
model_name_or_path: {encoder}
pooling: mean
embedding_size: 16
projection_init: random
normalize: true
dropout: 0.1
loss_weighting: static
classification_loss_weight: 1.0
sentiment_loss_weight: 1.0
distillation_weight: 10.0
head_logit_scale: 20.0
allow_pickle_weights: false
data_dir: null
sources: null
train_file: {train}
validation_file: null
text_column: text
label_column: sentiment
score_column: score
class_names:
- negative
- positive
test_size: null
max_samples: null
max_length: 128
skip_bad_lines: false
sts_eval_file: null
output_dir: {out}
per_device_train_batch_size: 16
num_train_epochs: 5.0
max_steps: 2
learning_rate: 5.0e-05
lr_scheduler_type: linear
warmup_steps: 0.1
optim: adamw_torch_fused
weight_decay: 0.01
adam_beta1: 0.9
adam_beta2: 0.999
adam_epsilon: 1.0e-08
gradient_accumulation_steps: 1
max_grad_norm: 1.0
label_smoothing_factor: 0.1
bf16: true  # chosen automatically: bf16 autocast is fast on this device type only where this says true
fp16: false
gradient_checkpointing: false
torch_compile: false
logging_steps: 10
disable_tqdm: true
eval_strategy: epoch
eval_steps: null
per_device_eval_batch_size: 64
save_strategy: 'no'
save_steps: 500
seed: 42
data_seed: null
use_cpu: true
train_sampling_strategy: group_by_length
backbone_learning_rate: null
shared_learning_rate: 0.0002
head_learning_rate: 0.0002
loss_weighting_learning_rate: 0.01
layerwise_lr_decay: 1.0
freeze: none
freeze_backbone_layers: 0
unfreeze_backbone_at_epoch: null
"""


def test_a_run_config_of_0_1_replays_with_the_seed_flags_as_tasks(tiny_encoder_dir, synthetic_csv, tmp_path):
    path = tmp_path / "run_config.yaml"
    path.write_text(OLD_RUN_CONFIG.format(encoder=tiny_encoder_dir, train=synthetic_csv, out=tmp_path / "out"))
    model_args, data_args, training_args = parse_args([str(path)])
    tasks = {task.spec.name: task for task in tasks_from_flags(model_args, data_args, training_args)}
    assert tasks["classification"].spec.label_smoothing == 0.1 and tasks["distillation"].spec.loss_weight == 10.0
    assert tasks["classification"].data.data == {"train_file": str(synthetic_csv)}
    assert tasks["sentiment"].data.score_from == "classification"  # the file has no score column: derived


def test_resuming_a_checkpoint_whose_optimizer_groups_differ_is_refused(tiny_encoder_dir, synthetic_csv, tmp_path):
    out = tmp_path / "run"
    flags = [
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--train_file",
        str(synthetic_csv),
        "--text_column",
        "text",
        "--label_column",
        "sentiment",
        "--embedding_size",
        "16",
        "--max_steps",
        "2",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        "--output_dir",
        str(out),
    ]
    assert main(flags) == 0
    optimizer_file = out / "checkpoint-1" / "optimizer.pt"
    state = torch.load(optimizer_file, weights_only=True)
    state["param_groups"][-1]["name"] = "heads.from_another_layout"
    torch.save(state, optimizer_file)
    with pytest.raises(ValueError, match=r"its optimizer has the parameter groups .*heads.from_another_layout"):
        from sentmtl.training.run import run

        run(*parse_args([*flags, "--resume_from_checkpoint", str(out / "checkpoint-1"), "--max_steps", "3"]))


# -- found by review after the change (each failed before its fix) ------------------------------------------------------


def test_review_float_like_names_match_by_number():
    half_stars = LabelMap(["0.5", "1.0", "1.5", "2.0", "2.5"])
    assert [half_stars(v, "x") for v in (2.0, 1.0, "2", 0.5, np.float32(1.5))] == [3, 1, 3, 0, 2]
    with pytest.raises(ValueError, match="numbers are names here, not ids"):
        half_stars(4, "x")


def test_review_a_class_label_column_is_read_by_its_names(tiny_tokenizer):
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["pos", "neg"])}
    )
    table = datasets.Dataset.from_dict(
        {"sentence": ["the place was best .", "the place was worst ."], "label": [0, 1]}, features=features
    )
    tone = TaskSpec("tone", "classification", labels=["neg", "pos"])
    assert prepare(table, [tone], tiny_tokenizer)["target__tone"] == [1, 0]  # pos, neg in the task's order
    renamed = TaskSpec("tone", "classification", labels=["good", "bad"])  # other names: a renaming, by id
    assert prepare(table, [renamed], tiny_tokenizer)["target__tone"] == [0, 1]


def test_a_class_label_column_whose_names_differ_by_case_is_read_by_its_names(tiny_tokenizer):
    """Issue 31, finding 1: names equal to the labels but for case were read by id, swapping the classes."""
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["POS", "NEG"])}
    )
    table = datasets.Dataset.from_dict(
        {"sentence": ["the place was best .", "the place was worst ."], "label": [0, 1]}, features=features
    )
    tone = TaskSpec("tone", "classification", labels=["neg", "pos"])
    assert prepare(table, [tone], tiny_tokenizer)["target__tone"] == [1, 0]  # POS is pos (id 1), NEG is neg (id 0)
    partly = TaskSpec("tone", "classification", labels=["neg", "good"])  # NEG is a label, POS is not: refused
    with pytest.raises(ValueError, match=r"ClassLabel names \['POS', 'NEG'\] are partly the task's labels"):
        prepare(table, [partly], tiny_tokenizer)


def test_review_domain_ids_mean_the_same_domain_in_train_and_eval(tmp_path):
    train = write_csv(
        tmp_path / "train.csv",
        ["sentence", "label", "source"],
        [[f"row {i}", i % 2, ["amazon", "imdb", "yelp"][i % 3]] for i in range(12)],
    )
    valid = write_csv(
        tmp_path / "valid.csv", ["sentence", "label", "source"], [[f"eval {i}", i % 2, "yelp"] for i in range(4)]
    )
    task = TaskSpec("tone", "classification", labels=["neg", "pos"])
    source = build_sources(
        [RunTask(task, DataSpec({"train_file": str(train), "validation_file": str(valid)}))], DataArguments(), seed=0
    )[0]
    names = [source.domain_names[d] for d in source.eval["domain"]]
    assert names == ["yelp"] * 4


def test_review_a_batch_without_a_tasks_target_leaves_its_learned_weight_alone(tiny_encoder_dir):
    tasks = [TaskSpec("cls", "classification", labels=["neg", "pos"]), TaskSpec("sc", "score")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks, loss_weighting="uncertainty")
    batch = tokenizer(["the film was good .", "bad ."], padding=True, return_tensors="pt")
    out = model(**batch, task_labels={"cls": torch.tensor([1, 0]), "sc": torch.tensor([float("nan")] * 2)})
    out.loss.backward()
    assert model.loss_log_variances.grad[1] == 0.0 and model.loss_log_variances.grad[0] != 0.0


def test_review_row_comparing_eval_losses_weigh_batches_by_their_labelled_rows(tiny_encoder_dir, tmp_path):
    tasks = [TaskSpec("sim", "similarity")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks)
    a = ["the film was good .", "the food was bad .", "it was great !", "the plot was boring ."] * 2
    b = ["the movie was fine .", "the service was awful .", "the phone is best .", "the story was poor ."] * 2
    scores = [float("nan")] * 4 + [0.9, 0.1, 0.7, 0.3]
    table = datasets.Dataset.from_dict({"sentence1": a, "sentence2": b, "score": scores})
    args = args_for(tmp_path, per_device_eval_batch_size=4)
    full = SentMtlTrainer(model=model, args=args, processing_class=tokenizer).evaluate(prepare(table, tasks, tokenizer))
    labelled = SentMtlTrainer(model=model, args=args, processing_class=tokenizer).evaluate(
        prepare(table.select(range(4, 8)), tasks, tokenizer)
    )
    assert full["eval_sim_loss"] == pytest.approx(labelled["eval_sim_loss"], rel=1e-5)


def test_review_two_tasks_never_share_a_default_column_silently(tiny_tokenizer):
    table = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "score": [0.5]})
    with pytest.raises(ValueError, match=r"tasks \['sc', 'sim'\] would all read the column 'score' by default"):
        prepare(table, [TaskSpec("sc", "score"), TaskSpec("sim", "similarity")], tiny_tokenizer)


def test_review_trainer_refusals_are_clear(tiny_encoder_dir, tmp_path):
    from sentmtl.data.batching import MultiSourceDataset

    tasks = [TaskSpec("val", "regression")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks)
    with pytest.raises(ValueError, match="needs processing_class=tokenizer"):
        SentMtlTrainer(model=model, args=args_for(tmp_path))
    with pytest.raises(ValueError, match=r"eval_tasks \['extra'\] have heads"):
        SentMtlTrainer(
            model=model,
            args=args_for(tmp_path),
            processing_class=tokenizer,
            eval_tasks=[TaskSpec("extra", "regression")],
        )
    part = prepare(regression_table(6), tasks, tokenizer, label_columns={"val": "value"})
    trainer = SentMtlTrainer(model=model, args=args_for(tmp_path), processing_class=tokenizer)
    with pytest.raises(ValueError, match=r"tasks \['val'\] have targets in more than one part"):
        trainer.evaluate(MultiSourceDataset([part, part]))
    with pytest.raises(NotImplementedError, match="use evaluate"):
        trainer.predict(part)
    with pytest.raises(ValueError, match="evaluate\\(\\) needs an eval_dataset"):
        trainer.evaluate()
    with pytest.raises(ValueError, match="head_learning_rate 0 must be > 0"):
        RunTask.from_dict({"name": "val", "type": "regression", "head_learning_rate": 0}, "tasks[0]")


def test_review_relational_distillation_leaves_out_rows_without_a_teacher():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 6), torch.randn(5, 8)
    with_absent = teacher.clone()
    with_absent[2] = float("nan")
    kept = [0, 1, 3, 4]
    loss = relational_distillation_loss(student, with_absent)
    assert torch.isfinite(loss)
    assert float(loss) == pytest.approx(float(relational_distillation_loss(student[kept], teacher[kept])), rel=1e-5)


def test_review_file_flags_with_the_corpus_and_an_unused_test_size_are_refused(tmp_path):
    model_args, data_args, training_args = parse_args(
        ["--score_column", "rating", "--output_dir", str(tmp_path), "--use_cpu", "true"]
    )
    with pytest.raises(ValueError, match="--score_column name\\(s\\) columns of --train_file"):
        tasks_from_flags(model_args, data_args, training_args)
    train = write_csv(tmp_path / "t.csv", ["sentence", "label"], [["a", 0], ["b", 1]])
    task = RunTask(
        TaskSpec("tone", "classification", labels=["neg", "pos"]),
        DataSpec({"train_file": str(train), "validation_file": str(train)}),
    )
    with pytest.raises(ValueError, match="--test_size 0.3: every source has evaluation data of its own"):
        build_sources([task], DataArguments(test_size=0.3), seed=0)
