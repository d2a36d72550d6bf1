"""sentmtl/training/trainer.py: the optimizer it builds (learned weights), the loss (label smoothing), the data
seed, evaluation (its rows, its dataset, its weighting), and the refusals. The same over real runs (accumulation,
seeded batches, the non-finite loss stop, checkpoints from other layouts): tests/e2e/test_run_mtl.py. Its parameter
groups: tests/training/test_param_groups.py."""

import math

import datasets
import pytest
import torch
from helpers import (
    model_with,
    synthetic_rows,
    tokenized_synthetic,
    training_args,
)
from transformers import (
    TrainerState,
)

import sentmtl
from sentmtl.data.batching import MultiTaskCollator, prepare
from sentmtl.data.plan import RunTask
from sentmtl.data.sampler import TaskBatchSampler
from sentmtl.model.task_spec import TaskSpec
from sentmtl.training.arguments import SentMtlTrainingArguments
from sentmtl.training.trainer import SentMtlTrainer


def test_uncertainty_weights_move_when_one_task_dominates(tiny_encoder_dir, tiny_tokenizer, tmp_path):
    """The log-variances trained at the heads' LR (2e-4) and moved by ~0.02 in 100 steps: the weighting did
    nothing. With Task A's loss 100× Task B's, the optimizer the trainer builds must part them by more than 1."""

    def log_variances_after_100_steps(**lrs):
        model, _ = sentmtl.load_model_and_tokenizer(
            str(tiny_encoder_dir), embedding_size=16, loss_weighting="uncertainty"
        )
        trainer = SentMtlTrainer(
            model=model,
            args=training_args(tmp_path, **lrs),
            train_dataset=tokenized_synthetic(tiny_tokenizer),
            processing_class=tiny_tokenizer,
        )
        optimizer = trainer.create_optimizer()
        for _ in range(100):  # the task losses held fixed: only the weighting learns
            model.combine_losses({"classification": torch.tensor(5.0), "sentiment": torch.tensor(0.05)}).backward()
            optimizer.step()
            optimizer.zero_grad()
        return model.loss_log_variances.detach().tolist()

    assert training_args(tmp_path).loss_weighting_learning_rate == 1e-2  # the documented default
    s_a, s_b = log_variances_after_100_steps()
    # The optimum is s = log(2 L): +2.3 for Task A, -2.3 for Task B; Adam moves each by about LR per step.
    assert s_a > 0.5 and s_b < -0.5, (s_a, s_b)
    old_a, old_b = log_variances_after_100_steps(loss_weighting_learning_rate=2e-4)  # the heads' LR, as before
    assert abs(old_a) < 0.05 and abs(old_b) < 0.05


def test_label_smoothing_keeps_task_b(tiny_model, tiny_tokenizer, tmp_path):
    """The Trainer's label smoother replaced the model's loss with a smoothed Task A loss: Task B stopped training.
    Now each classification task smooths its own cross-entropy, inside the model's summed loss."""

    tiny_model.config.dropout = 0.0
    tiny_model.config.tasks = [
        {**t.to_dict(), "label_smoothing": 0.1 if t.type == "classification" else 0.0} for t in tiny_model.tasks
    ]
    args = training_args(tmp_path, label_smoothing_factor=0.1, max_steps=4, learning_rate=1e-3)
    dataset = tokenized_synthetic(tiny_tokenizer)
    before = tiny_model.sentiment_head.weight.detach().clone()
    trainer = SentMtlTrainer(model=tiny_model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    assert trainer.label_smoother is None
    batch = MultiTaskCollator(tiny_tokenizer, tiny_model.tasks)([dataset[i] for i in range(8)])
    batch.pop("domain")
    labels, scores = batch["task_labels"]["classification"], batch["task_labels"]["sentiment"]
    tiny_model.eval()
    with torch.no_grad():
        out = tiny_model(**batch)
        expected = torch.nn.functional.cross_entropy(
            out.logits, labels, label_smoothing=0.1
        ) + torch.nn.functional.binary_cross_entropy_with_logits(out.sentiment_logits, scores.float())
        assert trainer.compute_loss(tiny_model, dict(batch)).item() == pytest.approx(expected.item(), rel=1e-5)
    tiny_model.train()
    trainer.train()
    assert not torch.equal(tiny_model.sentiment_head.weight, before)


def test_the_trainer_takes_only_task_labels_for_labels(tiny_model, tiny_tokenizer, tmp_path):
    """The Trainer counts as a label every forward argument whose name holds "label": the collator's list of complete
    tasks was named `fully_labelled` at first, and became one (found in review)."""
    trainer = SentMtlTrainer(model=tiny_model, args=training_args(tmp_path), processing_class=tiny_tokenizer)
    assert trainer.label_names == ["task_labels"]


def test_data_seed_zero_is_a_seed(tiny_model, tiny_tokenizer, tmp_path):
    """`data_seed or seed` treated --data_seed 0 as unset."""

    trainer = SentMtlTrainer(
        model=tiny_model,
        args=training_args(tmp_path, data_seed=0, seed=42, train_sampling_strategy="group_by_length"),
        train_dataset=tokenized_synthetic(tiny_tokenizer),
        processing_class=tiny_tokenizer,
    )
    sampler = trainer.get_train_dataloader().batch_sampler
    while not isinstance(sampler, TaskBatchSampler):
        sampler = getattr(sampler, "batch_sampler", None) or sampler.sampler
    assert sampler.seed == 0


def test_training_batches_leave_the_rows_domains_out(tiny_model, tiny_tokenizer, tmp_path):
    """Issue 33: only evaluation reads `domain` (per-domain metrics); in a training batch it was copied to the device
    at every step for nothing. Evaluation's batches keep it."""
    trainer = SentMtlTrainer(
        model=tiny_model,
        args=training_args(tmp_path),
        train_dataset=tokenized_synthetic(tiny_tokenizer),
        processing_class=tiny_tokenizer,
    )
    batch = next(iter(trainer.get_train_dataloader()))
    assert "domain" not in batch and {"input_ids", "task_labels"} <= set(batch)
    rows = [trainer.train_dataset[i] for i in range(2)]
    assert "domain" in trainer.data_collator(rows)


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


def test_the_python_path_on_a_users_own_table_trains_and_evaluates(tiny_encoder_dir, tmp_path):
    """Issue #20, item 15: building the trainer in Python on one's own table (`prepare`) trains and evaluates."""
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


def regression_table(n, missing_every=3, offset=0.0):
    rows = synthetic_rows(n)
    values = [float("nan") if i % missing_every == 0 else i + offset for i in range(n)]
    return datasets.Dataset.from_dict({"sentence": rows["sentence"], "value": values, "label": rows["label"]})


def test_eval_loss_is_over_the_rows_the_metric_sees(tiny_encoder_dir, tmp_path):
    """Issue #20, item 4 (one evaluation path): a task's evaluation loss is over the rows its metric sees."""
    tasks = [TaskSpec("val", "regression")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks)
    table = prepare(regression_table(11), tasks, tokenizer, label_columns={"val": "value"})
    trainer = SentMtlTrainer(model=model, args=args_for(tmp_path), eval_dataset=table, processing_class=tokenizer)
    metrics = trainer.evaluate()
    assert metrics["eval_val_loss"] == pytest.approx(metrics["eval_val_mse"], rel=1e-5)
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_val_loss"], rel=1e-6)


def test_evaluate_honours_the_dataset_it_is_given(tiny_encoder_dir, tmp_path):
    """Issue #20, item 5: `evaluate(eval_dataset=…)` evaluates that dataset, not the trainer's own."""
    tasks = [TaskSpec("val", "regression")]
    model, tokenizer = model_with(tiny_encoder_dir, tasks)
    own = prepare(regression_table(8), tasks, tokenizer, label_columns={"val": "value"})
    other = prepare(regression_table(8, offset=100.0), tasks, tokenizer, label_columns={"val": "value"})
    trainer = SentMtlTrainer(model=model, args=args_for(tmp_path), eval_dataset=own, processing_class=tokenizer)
    on_other = trainer.evaluate(eval_dataset=other)
    reference = SentMtlTrainer(model=model, args=args_for(tmp_path), eval_dataset=other, processing_class=tokenizer)
    assert on_other["eval_val_mse"] == pytest.approx(reference.evaluate()["eval_val_mse"])
    assert on_other["eval_val_mse"] != pytest.approx(trainer.evaluate()["eval_val_mse"])


def test_eval_loss_is_the_learned_weighting_training_minimises(tiny_encoder_dir, tmp_path):
    """Issue #20, item 6: eval_loss is the learned (uncertainty) weighting training minimises, not the plain sum."""
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


def test_row_comparing_eval_losses_weigh_batches_by_their_labelled_rows(tiny_encoder_dir, tmp_path):
    """Found reviewing the #20 change: a row-comparing task's evaluation loss weighs each batch by its labelled rows."""
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


def test_trainer_refusals_are_clear(tiny_encoder_dir, tmp_path):
    """Found reviewing the #20 change: the trainer's refusals say what is missing and what to do."""
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


def test_a_transformers_without_the_pass_hook_refuses_a_stream_past_its_first_pass(
    tiny_model, tiny_tokenizer, tmp_path, monkeypatch
):
    """The pass and the batches in it, read back from the Trainer's epoch; a Trainer without `_init_training_state`
    (where the pass is set) cannot resume a stream past its first pass exactly, and says so."""
    from transformers import Trainer

    from sentmtl.training.trainer import SentMtlTrainer, stream_position

    checkpoint = tmp_path / "checkpoint-9"
    checkpoint.mkdir()
    TrainerState(epoch=2 + 3 / 24, global_step=9, max_steps=12).save_to_json(str(checkpoint / "trainer_state.json"))
    assert stream_position(str(checkpoint), gradient_accumulation_steps=2) == (2, 3)
    stream = datasets.Dataset.from_dict({"text": ["a", "b"]}).to_iterable_dataset()
    trainer = SentMtlTrainer(
        model=tiny_model,
        args=training_args(tmp_path, max_steps=12),
        train_dataset=stream,
        processing_class=tiny_tokenizer,
    )
    monkeypatch.delattr(Trainer, "_init_training_state")
    with pytest.raises(ValueError, match="stopped after the stream's first pass.*Upgrade transformers"):
        trainer._load_optimizer_and_scheduler(str(checkpoint))


def test_the_trainer_refuses_a_stream_under_several_processes(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    """A hand-built trainer (not run_mtl.py, which refuses earlier) given a streamed train_dataset under DDP."""

    from sentmtl.training.trainer import SentMtlTrainer

    stream = datasets.Dataset.from_dict({"text": ["a", "b"]}).to_iterable_dataset()
    trainer = SentMtlTrainer(
        model=tiny_model,
        args=training_args(tmp_path, max_steps=2),
        train_dataset=stream,
        processing_class=tiny_tokenizer,
    )
    monkeypatch.setattr(type(trainer.args), "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match="trains in one process; 2 were started"):
        trainer.get_train_dataloader()
