"""Data at scale: the teacher vector cache, tables converted batch by batch and cached, bounded evaluation."""

import csv
import logging
import multiprocessing
import re
import time

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_run_flags

import sentmtl.data.sources as task_data
import sentmtl.serving.embed as embed_module
from sentmtl.data.batching import tokenize_source
from sentmtl.data.files import read_table
from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.data.teacher_cache import Teacher, teacher_vectors
from sentmtl.model.task_spec import TaskSpec
from sentmtl.training.arguments import DataArguments
from sentmtl.training.run import main, teacher_encoder


class CountingTeacher(Teacher):
    """A teacher whose vectors are a function of the text, counting the sentences it embeds."""

    def __init__(self, key="k", width=4, delay=0.0):
        self.calls = []

        def encode(sentences):
            self.calls.append(len(sentences))
            time.sleep(delay)
            return np.array([[len(s), s.count(" "), i % 3, 1.0] for i, s in enumerate(sentences)], dtype=np.float32)[
                :, :width
            ]

        super().__init__("counting", key, width, encode)


def _texts(n, offset=0):
    return datasets.Dataset.from_dict({"text": [f"sentence number {i + offset} ." for i in range(n)]})


def test_teacher_vectors_are_cached_and_read_back(tmp_path):
    teacher = CountingTeacher()
    first = teacher_vectors(_texts(20), "text", teacher, tmp_path, chunk_size=8)
    assert teacher.calls == [8, 8, 4]  # computed in chunks: memory bounded by a chunk
    assert first.cache_files and first.cache_files[0]["filename"].startswith(str(tmp_path))  # memory-mapped, on disk
    again = teacher_vectors(_texts(20), "text", teacher, tmp_path, chunk_size=8)
    assert teacher.calls == [8, 8, 4]  # a hit: nothing embedded
    expected = teacher.encode([f"sentence number {i} ." for i in range(8)])
    np.testing.assert_array_equal(np.asarray(again["vectors"][:8], dtype=np.float32), expected)
    assert again.features["vectors"] == datasets.List(datasets.Value("float32"), length=4)


def test_a_changed_text_or_teacher_is_a_miss(tmp_path):
    teacher = CountingTeacher()
    teacher_vectors(_texts(5), "text", teacher, tmp_path)
    teacher_vectors(_texts(5, offset=1), "text", teacher, tmp_path)  # other texts
    teacher_vectors(_texts(5), "text", CountingTeacher(key="other weights"), tmp_path)
    assert teacher.calls == [5, 5]
    assert len(list(tmp_path.glob("*.arrow"))) == 3


def test_the_key_follows_the_encoder_weights_and_settings(tiny_model, tiny_tokenizer):
    def key(model, max_length=32, precision="fp32"):
        return teacher_encoder(model, tiny_tokenizer, None, max_length, precision=precision).key

    same = key(tiny_model)
    assert key(tiny_model) == same
    assert key(tiny_model, max_length=16) != same
    assert key(tiny_model, precision="bf16") != same
    tiny_tokenizer("a call sets the fast tokenizer's truncation state", truncation=True, max_length=8)
    assert key(tiny_model) == same  # the tokenizer's call-time state is not part of the key
    with torch.no_grad():
        next(tiny_model.encoder.parameters()).add_(1e-3)
    assert key(tiny_model) != same


def test_the_key_follows_the_side_the_tokenizer_truncates(tiny_model, tiny_tokenizer):
    """Issue 31, finding 4: a left-truncating tokenizer got the right-truncated vectors (and token ids) cached before."""
    import copy

    from sentmtl.utils.fingerprints import tokenizer_fingerprint

    left = copy.deepcopy(tiny_tokenizer)
    left.truncation_side = "left"
    long_text = "the movie was good and the food was bad and the phone was fine " * 4
    assert (
        left(long_text, truncation=True, max_length=8)["input_ids"]
        != tiny_tokenizer(long_text, truncation=True, max_length=8)["input_ids"]
    )  # the two keep other tokens: one cache entry cannot serve both
    assert tokenizer_fingerprint(left) != tokenizer_fingerprint(tiny_tokenizer)  # the token cache's key
    keys = {teacher_encoder(tiny_model, t, None, 8, precision="fp32").key for t in (tiny_tokenizer, left)}
    assert len(keys) == 2  # the teacher vectors' key


@pytest.mark.parametrize("damage", ["truncate", "flip", "record"])
def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    teacher = CountingTeacher()
    good = np.asarray(teacher_vectors(_texts(30), "text", teacher, tmp_path)["vectors"])
    (arrow,) = tmp_path.glob("*.arrow")
    data = arrow.read_bytes()
    if damage == "truncate":
        arrow.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        arrow.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:
        arrow.with_suffix(".json").unlink()
    with caplog.at_level(logging.WARNING, logger="sentmtl.data.teacher_cache"):
        rebuilt = teacher_vectors(_texts(30), "text", teacher, tmp_path)
    assert "unreadable" in caplog.text and "rebuilding" in caplog.text
    assert len(teacher.calls) == 2  # computed again
    np.testing.assert_array_equal(np.asarray(rebuilt["vectors"]), good)


def _compute_in_another_process(folder, log):
    teacher = CountingTeacher(delay=1.0)
    vectors = teacher_vectors(_texts(12), "text", teacher, folder)
    with open(log, "a") as handle:
        handle.write(f"{len(teacher.calls)} {np.asarray(vectors['vectors']).sum()}\n")


def test_processes_sharing_a_cache_compute_once(tmp_path):
    """As the ranks of one DDP run do: one computes and writes while the other waits on the lock, then reads."""
    context = multiprocessing.get_context("spawn")
    log = tmp_path / "log.txt"
    processes = [context.Process(target=_compute_in_another_process, args=(tmp_path / "cache", log)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    lines = sorted(log.read_text().split("\n")[:-1])
    assert [line.split()[0] for line in lines] == ["0", "1"]  # one computed, the other read
    assert len({line.split()[1] for line in lines}) == 1  # the same vectors
    assert not list((tmp_path / "cache").glob("*.tmp"))


def _write_csv(path, rows, columns=("sentence", "label")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


def test_a_second_run_reads_its_teacher_vectors_and_tokens(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    calls = []
    original = embed_module.encode
    monkeypatch.setattr(embed_module, "encode", lambda *a, **k: calls.append(len(a[1])) or original(*a, **k))
    flags = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "one", "--max_steps", "2")
    assert main(flags) == 0
    assert sum(calls) == 64  # every row of the file, once (before the split)
    calls.clear()
    assert (
        main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "two", "--max_steps", "2", "--seed", "7")) == 0
    )
    assert calls == []  # another seed splits differently, and still reads the same vectors


def test_table_and_token_fingerprints_are_stable(tiny_encoder_dir, synthetic_csv, tiny_tokenizer):
    """The caches are found again only if the same data gives the same fingerprint in the next run, and a called
    tokenizer hashes differently under `datasets`' own hashing."""
    tasks = [
        RunTask(
            TaskSpec("sentiment", "classification", labels=["negative", "positive"]),
            DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment"),
        )
    ]
    first, _ = task_data.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2)
    tokens = tokenize_source(first, tiny_tokenizer, 32)
    tiny_tokenizer(["the film"], truncation=True, max_length=4)
    second, _ = task_data.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2)
    assert second._fingerprint == first._fingerprint
    assert first.cache_files and second.cache_files == first.cache_files  # on disk, beside the file's Arrow cache
    assert tokenize_source(second, tiny_tokenizer, 32)._fingerprint == tokens._fingerprint
    assert tokenize_source(second, tiny_tokenizer, 16)._fingerprint != tokens._fingerprint
    other = [
        RunTask(
            TaskSpec("sentiment", "score"),
            DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment"),
        )
    ]
    with pytest.raises(ValueError, match="is not a number"):
        task_data.table_columns(read_table(synthetic_csv), other, "train.csv", 2)  # other tasks: not the cached table


def test_batches_give_the_same_columns_as_one_batch(tmp_path, monkeypatch):
    """Contrastive ids number the table's distinct texts across batches; errors name the table's line, not the
    batch's."""
    rows = [(f"q{i % 7}", f"d{i % 5}", f"n{i % 3}", i / 20) for i in range(20)]
    path = _write_csv(tmp_path / "pairs.csv", rows, ("anchor", "positive", "negative", "score"))
    task = RunTask(
        TaskSpec("r", "contrastive"),
        DataSpec(
            {"train_file": str(path)},
            text_column="anchor",
            text_pair_column="positive",
            negative_columns=["negative"],
            min_score=0.2,
        ),
    )
    whole, _ = task_data.table_columns(read_table(path), [task], "pairs.csv", 2, documents=["extra", "q1"])
    monkeypatch.setattr(task_data, "BATCH_ROWS", 3)
    batched, _ = task_data.table_columns(read_table(path), [task], "pairs.csv", 2, documents=["extra", "q1"])
    assert batched["target__r"] == whole["target__r"] and batched["text"] == whole["text"]
    assert whole.num_rows == 21 and whole["target__r"][-1][0] == 2  # "q1" is an anchor: only "extra" joins
    bad = _write_csv(tmp_path / "bad.csv", [(f"s{i}", "positive" if i != 7 else "maybe") for i in range(10)])
    label = RunTask(
        TaskSpec("c", "classification", labels=["negative", "positive"]), DataSpec({"train_file": str(bad)})
    )
    with pytest.raises(ValueError, match=r"bad.csv \(train\), line 9, column 'label': label 'maybe'"):
        task_data.build_sources([label], DataArguments(), seed=0)


def test_max_eval_samples_bounds_every_evaluated_source(tiny_encoder_dir, synthetic_csv, tmp_path, capsys):
    stsb = tmp_path / "sts-dev.csv"
    stsb.write_text(
        "".join(
            f"g\tf\t2015\t{i}\t{i % 5}.0\tthe film was good .\tthe {w} was bad .\n"
            for i, w in enumerate(["movie", "food", "place", "story", "phone", "plot"] * 3)
        )
    )
    flags = tiny_run_flags(
        tiny_encoder_dir,
        synthetic_csv,
        tmp_path / "out",
        "--max_steps",
        "1",
        "--max_eval_samples",
        "5",
        "--sts_eval_file",
        str(stsb),
    )
    assert main(flags) == 0
    import json

    metrics = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert metrics["eval_classification_rows"] == metrics["eval_sentiment_rows"] == 5
    assert metrics["eval_stsb_rows"] == 5
    table = capsys.readouterr().out
    assert re.search(r"^classification\s+rows\s+5$", table, re.M) and re.search(r"^stsb\s+rows\s+5$", table, re.M)
    full = tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "full", "--max_steps", "1")
    assert main(full) == 0
    assert json.loads((tmp_path / "full" / "eval_results.json").read_text())["eval_classification_rows"] > 5
    with pytest.raises(ValueError, match="--max_eval_samples 0 must be at least 1"):
        DataArguments(max_eval_samples=0)


def test_the_split_joins_rows_through_a_column_of_lists():
    """A hard negative that is another row's anchor joins the two rows' groups (a column of lists counts as one text
    column per position), as the add-a-column-per-negative version did."""
    from sentmtl.data.split import train_test_split

    texts = [f"sentence {i}" for i in range(20)]
    partner = [i + 1 if i % 2 == 0 else i - 1 for i in range(20)]  # rows 2k and 2k + 1 name each other
    table = datasets.Dataset.from_dict(
        {"text": texts, "negatives": [[texts[p], f"other {i}"] for i, p in enumerate(partner)]}
    )
    for seed in range(5):
        split = train_test_split(table, 0.3, seed, text_column=["text", "negatives"])
        train = {int(t.split()[1]) for t in split["train"]["text"]}
        assert all((i in train) == (partner[i] in train) for i in range(20))
        assert split["test"].num_rows == 6  # 10 groups of 2 rows, 3 held out


# -- streaming -------------------------------------------------------------------------------------------------------


@pytest.fixture
def stream_files(tmp_path):
    from conftest import synthetic_rows

    rows = synthetic_rows(200)
    labelled = [(s, ["negative", "positive"][label]) for s, label in zip(rows["sentence"], rows["label"])]
    train = _write_csv(tmp_path / "train.csv", labelled[:160])
    dev = _write_csv(tmp_path / "dev.csv", labelled[160:])
    return train, dev


def _stream_run_file(tmp_path, train, dev, **data):
    import yaml

    source = {"train_file": str(train), "validation_file": str(dev), "streaming": True, **data}
    path = tmp_path / "stream.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {"name": "sentiment", "type": "classification", "labels": ["negative", "positive"], "data": source},
                    {"name": "distillation", "type": "distillation", "data": source},
                ]
            }
        )
    )
    return path


def _stream_flags(tiny_encoder_dir, run_file, out, *extra):
    return [
        str(run_file),
        "--model_name_or_path",
        str(tiny_encoder_dir),
        "--embedding_size",
        "16",
        "--output_dir",
        str(out),
        "--max_steps",
        "10",
        "--per_device_train_batch_size",
        "8",
        "--learning_rate",
        "1e-3",
        "--stream_buffer_size",
        "32",
        "--use_cpu",
        "true",
        "--disable_tqdm",
        "true",
        *extra,
    ]


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


def test_an_interrupted_streamed_run_resumes_at_the_right_row(tiny_encoder_dir, tmp_path, stream_files):
    import signal

    from test_faults import SignalAtStep, run_in_process

    from sentmtl.training.run import RunInterrupted

    run_file = _stream_run_file(tmp_path, *stream_files)
    reference = run_in_process(_stream_flags(tiny_encoder_dir, run_file, tmp_path / "reference"))
    out = tmp_path / "interrupted"
    with pytest.raises(RunInterrupted, match="stopped at step 5 of 10"):
        run_in_process(_stream_flags(tiny_encoder_dir, run_file, out), callbacks=[SignalAtStep(4, signal.SIGINT)])
    resumed = run_in_process(_stream_flags(tiny_encoder_dir, run_file, out, "--resume_from_checkpoint", "auto"))
    for key in ("eval_loss", "eval_sentiment_accuracy", "eval_sentiment_log_loss", "eval_distillation_loss"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
    other = run_in_process(_stream_flags(tiny_encoder_dir, run_file, tmp_path / "other", "--seed", "3"))
    assert other["eval_sentiment_log_loss"] != pytest.approx(reference["eval_sentiment_log_loss"], abs=1e-6)


@pytest.mark.parametrize("stop", [6, 11])
def test_a_streamed_run_resumed_after_its_first_pass_is_exact(
    tiny_encoder_dir, tmp_path, stream_files, monkeypatch, stop
):
    """36 rows, 8 a batch: 5 batches a pass (the last of 4 rows), so 12 steps are 2 passes and 2 batches of a third.
    Stopped after the first batch of the second pass (6) or in the third (11), the resumed run trains the batches the
    uninterrupted one did, in its order — not the later pass from its start — and ends on the same model."""
    import hashlib
    import signal

    from conftest import synthetic_rows
    from test_faults import SignalAtStep, run_in_process

    from sentmtl.training.run import RunInterrupted
    from sentmtl.training.trainer import SentMtlTrainer

    trained = []
    training_step = SentMtlTrainer.training_step

    def recording(self, model, inputs, *args, **kwargs):
        trained.append(hashlib.sha1(inputs["input_ids"].numpy().tobytes()).hexdigest()[:8])  # the batch, by its rows
        return training_step(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SentMtlTrainer, "training_step", recording)
    rows = synthetic_rows(36)
    labelled = [(s, ["negative", "positive"][label]) for s, label in zip(rows["sentence"], rows["label"])]
    train = _write_csv(tmp_path / "short.csv", labelled)
    run_file = _stream_run_file(tmp_path, train, stream_files[1])

    def flags(out, *extra):
        return _stream_flags(tiny_encoder_dir, run_file, tmp_path / out, "--max_steps", "12", *extra)

    reference = run_in_process(flags("reference"))
    uninterrupted, trained[:] = list(trained), []
    assert len(uninterrupted) == 12 and uninterrupted[5:10] != uninterrupted[:5]  # each pass reshuffled
    with pytest.raises(RunInterrupted, match=f"stopped at step {stop} of 12"):
        run_in_process(flags("interrupted"), callbacks=[SignalAtStep(stop - 1, signal.SIGINT)])
    resumed = run_in_process(flags("interrupted", "--resume_from_checkpoint", "auto"))
    assert trained == uninterrupted
    for key in ("eval_loss", "eval_sentiment_accuracy", "eval_sentiment_log_loss", "eval_distillation_loss"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key


def test_a_transformers_without_the_pass_hook_refuses_a_stream_past_its_first_pass(
    tiny_model, tiny_tokenizer, tmp_path, monkeypatch
):
    """The pass and the batches in it, read back from the Trainer's epoch; a Trainer without `_init_training_state`
    (where the pass is set) cannot resume a stream past its first pass exactly, and says so."""
    from test_training import training_args
    from transformers import Trainer, TrainerState

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


def test_a_streamed_teacher_is_the_starting_encoder_frozen(tiny_encoder_dir, tmp_path, stream_files):
    """The targets of rows read late in the run are the starting encoder's, not the trained model's."""
    from sentmtl.training.run import parse_args, run

    run_file = _stream_run_file(tmp_path, *stream_files)
    seen = []
    original = embed_module.encode

    def spy(model, *args, **kwargs):
        seen.append(float(sum(p.detach().double().sum() for p in model.encoder.parameters())))
        return original(model, *args, **kwargs)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(embed_module, "encode", spy)
    monkeypatch.setattr(task_data, "STREAM_ROWS", 8)  # read ahead by one training batch
    try:
        run(*parse_args(_stream_flags(tiny_encoder_dir, run_file, tmp_path / "out")))
    finally:
        monkeypatch.undo()
    assert len(seen) >= 10 and len(set(seen)) == 1  # every batch's teacher had the same (starting) weights


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
        run(*parse_args([*_stream_flags(tiny_encoder_dir, run_file, tmp_path / "out"), *change.get("flags", [])]))


def test_stream_buffer_size_without_a_stream_is_refused(tiny_encoder_dir, synthetic_csv, tmp_path):
    with pytest.raises(ValueError, match="no task's data is streamed"):
        from sentmtl.training.run import parse_args, run

        run(*parse_args(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "out", "--stream_buffer_size", "5")))


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


def test_tokenising_keeps_the_teacher_vectors_where_they_lie(
    tiny_encoder_dir, synthetic_csv, tiny_tokenizer, tiny_model
):
    """The vector columns are joined back beside the tokens (memory-mapped from the teacher cache), not copied
    through the tokenising map; the rows are those a plain map gives, split selection included."""
    from sentmtl.data.batching import tokenize_source

    tasks = [
        RunTask(
            TaskSpec("sentiment", "classification", labels=["negative", "positive"]),
            DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment"),
        ),
        RunTask(
            TaskSpec("distillation", "distillation"), DataSpec({"train_file": str(synthetic_csv)}, text_column="text")
        ),
    ]
    teacher = teacher_encoder(tiny_model, tiny_tokenizer, None, 32)
    source = task_data.build_sources(tasks, DataArguments(), 0, lambda name: teacher)[0]
    for split in (source.train, source.eval):
        joined = tokenize_source(split, tiny_tokenizer, 32)
        plain = split.map(
            lambda b: dict(tiny_tokenizer(b["text"], truncation=True, max_length=32)),
            batched=True,
            remove_columns=["text"],
        )
        assert joined.num_rows == plain.num_rows == split.num_rows
        for i in (0, split.num_rows - 1):
            assert joined[i] == plain[i]
        files = [f["filename"] for f in joined.cache_files]
        teacher_files = [f for f in files if f.startswith(str(task_data_cache_dir()))]
        assert teacher_files  # the vectors are read from the teacher cache's own file
        assert all(
            "target__distillation" not in datasets.Dataset.from_file(f).column_names
            for f in files
            if f not in teacher_files
        )  # and are in no other file


def task_data_cache_dir():
    import sentmtl.data.teacher_cache

    return sentmtl.data.teacher_cache.default_cache_dir()


def test_a_selection_of_an_in_memory_table_keeps_its_own_targets(tiny_model, tiny_tokenizer, tmp_path):
    """Two tables with the same texts (so the same cached teacher vectors) and different targets: each selection's
    tokens carry its own table's targets (a key made of the teacher file alone would hand back the first's)."""
    from sentmtl.data.batching import tokenize_source
    from sentmtl.data.sources import add_teacher_targets, bounded

    teacher = teacher_encoder(tiny_model, tiny_tokenizer, None, 32)
    member = [RunTask(TaskSpec("d", "distillation"))]
    texts = [f"the film was good {i} ." for i in range(8)]
    out = []
    for value in (1, 9):
        table = datasets.Dataset.from_dict({"text": texts, "target__c": [value] * 8})
        table = add_teacher_targets(table, member, lambda name: teacher, tmp_path)
        out.append(tokenize_source(bounded(table, 5, "t"), tiny_tokenizer, 32))
    assert out[0]["target__c"] == [1] * 5 and out[1]["target__c"] == [9] * 5


def test_an_empty_file_is_an_error_that_names_it(tmp_path):
    empty = _write_csv(tmp_path / "empty.csv", [])
    task = RunTask(
        TaskSpec("c", "classification", labels=["negative", "positive"]), DataSpec({"train_file": str(empty)})
    )
    with pytest.raises(ValueError, match=r"empty.csv: no rows \(a header alone"):
        task_data.build_sources([task], DataArguments(), seed=0)


def test_max_samples_embeds_only_the_subset(tiny_encoder_dir, tiny_model, tiny_tokenizer, tmp_path):
    from conftest import synthetic_rows

    rows = synthetic_rows(60)
    path = _write_csv(
        tmp_path / "train.csv",
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


def test_training_hands_freed_memory_back_every_few_steps(tiny_encoder_dir, synthetic_csv, tmp_path, monkeypatch):
    """The heap is trimmed every RELEASE_EVERY_STEPS steps of a run (without the cycle collector, too slow to run
    that often), and once after preparing the data and once after training (with it)."""
    import sentmtl.training.callbacks as callbacks
    import sentmtl.training.run as run_module
    from sentmtl.utils.memory import RELEASE_EVERY_STEPS

    during, around = [], []
    monkeypatch.setattr(callbacks, "release_memory", lambda collect=True: during.append(collect))
    monkeypatch.setattr(run_module, "release_memory", lambda collect=True: around.append(collect))
    steps = 2 * RELEASE_EVERY_STEPS + 3
    assert main(tiny_run_flags(tiny_encoder_dir, synthetic_csv, tmp_path / "run", "--max_steps", str(steps))) == 0
    assert during == [False, False]  # after steps 10 and 20 of 23
    assert around == [True, True]
    with pytest.raises(ValueError, match="every_steps=0"):
        callbacks.ReleaseMemoryCallback(0)


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
    from pathlib import Path

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: nothing to trim")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    done = subprocess.run(
        [sys.executable, "-c", FREED_HEAP],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 200e6  # of the 256 MB freed


def test_a_streamed_run_pads_its_batches_to_a_multiple_of_8(tiny_encoder_dir, tmp_path, stream_files, monkeypatch):
    """Fewer batch shapes for a stream's unsorted lengths (STREAM_PAD_MULTIPLE); a table's batches are padded to
    their longest row, as before."""
    from sentmtl.data.batching import STREAM_PAD_MULTIPLE, MultiTaskCollator

    lengths = []
    original = MultiTaskCollator.__call__

    def recording(self, rows):
        batch = original(self, rows)
        lengths.append((batch["input_ids"].shape[1], max(sum(row["attention_mask"]) for row in rows)))
        return batch

    monkeypatch.setattr(MultiTaskCollator, "__call__", recording)
    train, dev = stream_files
    with open(train) as handle:  # rows one or two tokens longer: most batches pad past their longest row
        header, *rows = list(csv.reader(handle))
    longer = [(f"{text} the" + " the" * (i % 2), label) for i, (text, label) in enumerate(rows)]
    assert (
        main(
            _stream_flags(
                tiny_encoder_dir,
                _stream_run_file(tmp_path, _write_csv(tmp_path / "s.csv", longer), dev),
                tmp_path / "s",
            )
        )
        == 0
    )
    assert STREAM_PAD_MULTIPLE == 8 and lengths
    assert all(padded % 8 == 0 and longest <= padded < longest + 8 for padded, longest in lengths), lengths
    assert any(padded > longest for padded, longest in lengths)  # padding was added
    lengths.clear()
    table = _write_csv(tmp_path / "t.csv", longer, columns=("text", "sentiment"))
    assert main(tiny_run_flags(tiny_encoder_dir, table, tmp_path / "t", "--max_steps", "4")) == 0
    assert lengths and all(padded == longest for padded, longest in lengths)


def test_padding_to_a_multiple_keeps_pairs_negatives_and_the_length_limit(tiny_tokenizer):
    from sentmtl.data.batching import MultiTaskCollator

    def encoded(n):
        return {"input_ids": list(range(1, n + 1)), "attention_mask": [1] * n, "token_type_ids": [0] * n}

    rows = [
        {
            **encoded(n),
            **{f"pair_{k}": v for k, v in encoded(n + 1).items()},
            **{
                f"negative_{k}": [encoded(n + 2)[k], encoded(3)[k]]
                for k in ("input_ids", "attention_mask", "token_type_ids")
            },
        }
        for n in (5, 7)
    ]
    batch = MultiTaskCollator(tiny_tokenizer, [], pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (2, 8) and batch["pair_input_ids"].shape == (2, 8)
    assert batch["negative_input_ids"].shape == (2, 2, 16)  # rows, k, 9 tokens padded to 16
    assert batch["attention_mask"].sum(1).tolist() == [5, 7] and batch["pair_attention_mask"].sum(1).tolist() == [6, 8]
    assert batch["negative_attention_mask"].sum(-1).tolist() == [[7, 3], [9, 3]]
    assert batch["token_type_ids"].shape == (2, 8)
    # Rounding up past the run's max_length (the encoder's position limit at most) would index past it: not done.
    capped = MultiTaskCollator(tiny_tokenizer, [], pad_to_multiple_of=8, max_length=7)([encoded(5), encoded(7)])
    assert capped["input_ids"].shape == (2, 7)
    assert MultiTaskCollator(tiny_tokenizer, [])([encoded(5), encoded(7)])["input_ids"].shape == (2, 7)


def test_the_trainer_refuses_a_stream_under_several_processes(tiny_model, tiny_tokenizer, tmp_path, monkeypatch):
    """A hand-built trainer (not run_mtl.py, which refuses earlier) given a streamed train_dataset under DDP."""
    from test_training import training_args

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
