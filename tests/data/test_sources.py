"""sentmtl/data/sources.py: each task's data: columns per task, domains, empty cells, bad values named by file, line
and column, columns converted batch by batch and cached, contrastive sources, and streamed sources (seeded order,
refusals)."""

import math
import re

import datasets
import numpy as np
import pytest
import yaml
from helpers import (
    pair_rows,
    retrieval_flags,
    retrieval_run_file,
    stream_flags,
    synthetic_rows,
    tiny_run_flags,
    write_csv,
    write_dict_csv,
)

import sentmtl.data.sources as task_data
from sentmtl.data.files import read_table
from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.data.sources import TARGET_PREFIX, build_sources
from sentmtl.data.teacher_cache import Teacher, teacher_encoder
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import task_metrics
from sentmtl.training.arguments import DataArguments
from sentmtl.training.run import parse_args, run


def test_tasks_sharing_a_file_read_their_own_text_columns(tmp_path):
    """Issue #20, item 7: tasks that share a file each read their own text column."""
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


def test_an_integer_source_column_is_not_named_amazon_imdb_yelp(tmp_path):
    """Issue #20, item 10: an integer `source` column keeps its own ids; only the UCI corpus's are amazon, imdb,
    yelp."""
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


def test_domain_ids_mean_the_same_domain_in_train_and_eval(tmp_path):
    """Found reviewing the #20 change: a domain id means the same domain in the training and evaluation files."""
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


def test_empty_cells_mark_rows_without_a_target(tiny_encoder_dir, tmp_path):
    """Issue #20, item 16: an empty cell says "no target on this row"; a bad cell names file, line and column."""
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


def test_an_empty_file_is_an_error_that_names_it(tmp_path):
    empty = write_csv(tmp_path / "empty.csv", ("sentence", "label"), [])
    task = RunTask(
        TaskSpec("c", "classification", labels=["negative", "positive"]), DataSpec({"train_file": str(empty)})
    )
    with pytest.raises(ValueError, match=r"empty.csv: no rows \(a header alone"):
        task_data.build_sources([task], DataArguments(), seed=0)


def test_max_samples_embeds_only_the_subset(tiny_encoder_dir, tiny_model, tiny_tokenizer, tmp_path):
    rows = synthetic_rows(60)
    path = write_csv(
        tmp_path / "train.csv",
        ("sentence", "label"),
        [
            (f"{s} {i}", ["negative", "positive"][label])
            for i, (s, label) in enumerate(zip(rows["sentence"], rows["label"]))
        ],
    )
    data = DataSpec({"train_file": str(path)}, max_samples=20)
    tasks = [
        RunTask(TaskSpec("c", "classification", labels=["negative", "positive"]), data),
        RunTask(TaskSpec("d", "distillation"), data),
    ]
    calls = []
    teacher = teacher_encoder(tiny_model, tiny_tokenizer, None, 32)
    counting = Teacher(teacher.name, teacher.key, teacher.width, lambda s: calls.append(len(s)) or teacher.encode(s))
    source = task_data.build_sources(tasks, DataArguments(), 0, lambda name: counting)[0]
    assert sum(calls) == 20 == source.train.num_rows + source.eval.num_rows
    assert len(source.train["target__d"][0]) == teacher.width


@pytest.mark.parametrize("column, line", [("anchor", 3), ("positive", 5), ("negative", 4)])
def test_a_row_without_a_text_names_file_line_and_column(tiny_encoder_dir, retrieval_files, tmp_path, column, line):
    rows = pair_rows(6, 0)
    rows[line - 2][column] = ""
    write_dict_csv(retrieval_files["train"], rows)
    run_file = retrieval_run_file(tmp_path, retrieval_files, negative_columns=["negative"])
    with pytest.raises(ValueError, match=f"pairs_train.csv \\(train\\), line {line}, column '{column}': empty text"):
        run(*parse_args([str(run_file), *retrieval_flags(tiny_encoder_dir, tmp_path / "out")]))


def test_a_score_that_is_not_a_number_names_its_place(tiny_encoder_dir, retrieval_files, tmp_path):
    rows = pair_rows(6, 0)
    rows[2]["score"] = "high"
    write_dict_csv(retrieval_files["train"], rows)
    run_file = retrieval_run_file(tmp_path, retrieval_files, min_score=0.5)
    with pytest.raises(ValueError, match="line 4, column 'score': 'high' is not a score, and min_score 0.5 needs one"):
        run(*parse_args([str(run_file), *retrieval_flags(tiny_encoder_dir, tmp_path / "out")]))


def test_distractors_need_evaluation_data_of_the_source(tiny_encoder_dir, retrieval_files, tmp_path):
    run_file = retrieval_run_file(tmp_path, retrieval_files, distractors={"file": str(retrieval_files["distractors"])})
    config = yaml.safe_load(run_file.read_text())
    del config["tasks"][0]["data"]["validation_file"]
    run_file.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="distractors are added to a source's own evaluation data"):
        run(*parse_args([str(run_file), *retrieval_flags(tiny_encoder_dir, tmp_path / "out")]))


def test_the_split_keeps_each_hard_negative_on_one_side(tiny_encoder_dir, retrieval_files, tmp_path):
    """A source without evaluation data of its own is split leak-free over every text of a row, hard negatives
    included: a train row's hard negative is never an evaluation query or document."""
    from sentmtl.data.sources import build_sources

    run_file = retrieval_run_file(tmp_path, retrieval_files, negative_columns=["negative"])
    config = yaml.safe_load(run_file.read_text())
    del config["tasks"][0]["data"]["validation_file"]
    run_file.write_text(yaml.safe_dump(config))
    _, data_args, _ = parse_args([str(run_file), *retrieval_flags(tiny_encoder_dir, tmp_path / "out")])
    source = build_sources(data_args.tasks, data_args, 42)[0]
    assert "_negative_0" not in source.train.column_names
    train_texts = {t for row in source.train for t in (row["text"], row["text_pair"], *row["negatives"])}
    eval_texts = {t for row in source.eval for t in (row["text"], row["text_pair"], *row["negatives"])}
    assert source.eval.num_rows > 0 and not train_texts & eval_texts


def test_a_stream_is_read_in_a_seeded_order(tmp_path, stream_files):
    from sentmtl.data.sources import build_sources

    train, dev = stream_files
    task = RunTask(
        TaskSpec("sentiment", "classification", labels=["negative", "positive"]),
        DataSpec({"train_file": str(train), "validation_file": str(dev), "streaming": True}),
    )

    def order(seed):
        return [row["text"] for row in build_sources([task], DataArguments(stream_buffer_size=32), seed)[0].train]

    first = order(0)
    assert sorted(first) == sorted(str(s) for s in read_table(train)["sentence"])  # every row once, none lost
    assert order(0) == first and order(1) != first


def test_a_bad_row_in_a_stream_names_its_line(tmp_path, stream_files):
    from sentmtl.data.sources import build_sources

    train, dev = stream_files
    lines = train.read_text().splitlines()
    lines[41] = "the film was good .,maybe"  # file line 42
    train.write_text("\n".join(lines) + "\n")
    task = RunTask(
        TaskSpec("sentiment", "classification", labels=["negative", "positive"]),
        DataSpec({"train_file": str(train), "validation_file": str(dev), "streaming": True}),
    )
    stream = build_sources([task], DataArguments(), 0)[0].train
    with pytest.raises(ValueError, match=r"train.csv \(train\), line 42, column 'label': label 'maybe'"):
        list(stream)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"validation_file": None}}, "a streamed source is read once, in order, and never split"),
        ({"data": {"batches_per_epoch": 3}}, "a stream has no epochs"),
        ({"data": {"batch_size": 4}}, "drop its batch_size"),
        ({"flags": ["--data_seed", "3"]}, "--data_seed: a stream is ordered by --seed"),
        ({"flags": ["--unfreeze_backbone_at_epoch", "1", "--freeze", "backbone"]}, "--unfreeze_backbone_at_epoch"),
        ({"flags": ["--max_steps", "-1", "--num_train_epochs", "1"]}, "give --max_steps"),
        ({"flags": ["--dataloader_num_workers", "2"]}, "--dataloader_num_workers 2"),
        ({"flags": ["--train_sampling_strategy", "random"]}, "its seeded shuffle buffer"),
        ({"second_source": True}, "must be the run's only training source"),
        ({"contrastive": True}, "a stream has no whole table"),
    ],
)
def test_what_a_stream_cannot_honour_is_refused(tiny_encoder_dir, tmp_path, stream_files, change, message):
    import yaml

    from sentmtl.training.run import parse_args, run

    train, dev = stream_files
    source = {"train_file": str(train), "validation_file": str(dev), "streaming": True}
    own = {
        key: change.get("data", {}).pop(key)
        for key in ("batches_per_epoch", "batch_size")
        if key in change.get("data", {})
    }
    source.update({k: v for k, v in change.get("data", {}).items() if v is not None})
    for key, value in change.get("data", {}).items():
        if value is None:
            source.pop(key)
    task = {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "data": source, **own}
    tasks = [task]
    if change.get("second_source"):
        tasks.append(
            {
                "name": "other",
                "type": "classification",
                "labels": ["negative", "positive"],
                "data": {"train_file": str(train)},
            }
        )
    if change.get("contrastive"):
        tasks = [{"name": "r", "type": "contrastive", "text_pair_column": "label", "data": source}]
    run_file = tmp_path / "refused.yaml"
    run_file.write_text(yaml.safe_dump({"tasks": tasks}))
    with pytest.raises(ValueError, match=re.escape(message)):
        run(*parse_args([*stream_flags(tiny_encoder_dir, run_file, tmp_path / "out"), *change.get("flags", [])]))


def test_stream_buffer_size_without_a_stream_is_refused(tiny_encoder_dir, synthetic_csv, tmp_path):
    with pytest.raises(ValueError, match="no task's data is streamed"):
        from sentmtl.training.run import parse_args, run

        run(*parse_args(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "out", "--stream_buffer_size", "5")))


def test_contrastive_tasks_sharing_a_source_keep_every_row_either_trains_on(tmp_path):
    """Review of the type-owned data (F1): two contrastive tasks on one file and one min_score, each reading its own
    score column, share a source; its training rows are those either task keeps (a row below one task's threshold
    is still the other's pair), and each task's targets still flag only its own pairs."""
    rows = [(f"q{i}", f"d{i}", float(i % 2), float(i % 3 == 0)) for i in range(12)]
    path = write_csv(tmp_path / "pairs.csv", ("anchor", "positive", "score", "score3"), rows)
    data = DataSpec({"train_file": str(path), "validation_file": str(path)}, "anchor", "positive")
    tasks = [
        RunTask(TaskSpec("odd", "contrastive"), data, {"min_score": 0.5}),
        RunTask(
            TaskSpec("third", "contrastive"), DataSpec(**{**vars(data), "label_column": "score3"}), {"min_score": 0.5}
        ),
    ]
    assert tasks[0].source_key() == tasks[1].source_key()
    (source,) = build_sources(tasks, DataArguments(), seed=0)
    wanted = [i for i in range(12) if i % 2 or i % 3 == 0]
    assert source.train["text"] == [f"q{i}" for i in wanted]
    assert [row[0] for row in source.train[TARGET_PREFIX + "odd"]] == [i % 2 for i in wanted]
    assert [row[0] for row in source.train[TARGET_PREFIX + "third"]] == [int(i % 3 == 0) for i in wanted]
