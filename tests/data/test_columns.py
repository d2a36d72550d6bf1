"""sentmtl/data/columns.py: a table's columns converted batch by batch (the same as in one batch, contrastive ids
continuing across batches, errors naming the table's line) and cached by a fingerprint that is stable across runs."""

import pytest
from helpers import write_csv

import sentmtl.data.columns as columns
import sentmtl.data.sources as task_data
from sentmtl.data.batching import tokenize_source
from sentmtl.data.files import read_table
from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import task_io
from sentmtl.training.arguments import DataArguments


def test_table_and_token_fingerprints_are_stable(tiny_encoder_dir, synthetic_csv, tiny_tokenizer):
    """The caches are found again only if the same data gives the same fingerprint in the next run, and a called
    tokenizer hashes differently under `datasets`' own hashing."""
    tasks = [
        RunTask(
            TaskSpec("sentiment", "classification", labels=["negative", "positive"]),
            DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment"),
        )
    ]
    first, _ = columns.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2)
    tokens = tokenize_source(first, tiny_tokenizer, 32)
    tiny_tokenizer(["the film"], truncation=True, max_length=4)
    second, _ = columns.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2)
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
        columns.table_columns(read_table(synthetic_csv), other, "train.csv", 2)  # other tasks: not the cached table


def test_batches_give_the_same_columns_as_one_batch(tmp_path, monkeypatch):
    """Contrastive ids number the table's distinct texts across batches; errors name the table's line, not the
    batch's."""
    rows = [(f"q{i % 7}", f"d{i % 5}", f"n{i % 3}", i / 20) for i in range(20)]
    path = write_csv(tmp_path / "pairs.csv", ("anchor", "positive", "negative", "score"), rows)
    task = RunTask(
        TaskSpec("r", "contrastive"),
        DataSpec(
            {"train_file": str(path)},
            text_column="anchor",
            text_pair_column="positive",
        ),
        {"negative_columns": ["negative"], "min_score": 0.2},
    )
    whole, _ = columns.table_columns(read_table(path), [task], "pairs.csv", 2, documents=["extra", "q1"])
    monkeypatch.setattr(columns, "BATCH_ROWS", 3)
    batched, _ = columns.table_columns(read_table(path), [task], "pairs.csv", 2, documents=["extra", "q1"])
    assert batched["target__r"] == whole["target__r"] and batched["text"] == whole["text"]
    assert whole.num_rows == 21 and whole["target__r"][-1][0] == 2  # "q1" is an anchor: only "extra" joins
    bad = write_csv(
        tmp_path / "bad.csv", ("sentence", "label"), [(f"s{i}", "positive" if i != 7 else "maybe") for i in range(10)]
    )
    label = RunTask(
        TaskSpec("c", "classification", labels=["negative", "positive"]), DataSpec({"train_file": str(bad)})
    )
    with pytest.raises(ValueError, match=r"bad.csv \(train\), line 9, column 'label': label 'maybe'"):
        task_data.build_sources([label], DataArguments(), seed=0)


def _prompted(tasks):
    from sentmtl.model.configuration_sentmtl import SentMtlConfig

    config = SentMtlConfig(
        prompts={"query": "query: ", "document": "passage: "}, tasks=[t.spec.to_dict() for t in tasks]
    )
    return config.prompt_for


def test_prompts_prefix_each_text_column_and_the_ids_number_the_sentences_without_them(tmp_path):
    """The contrastive anchor takes the query prompt, positives and negatives the document one; the ids number the
    sentences as the unprompted table does, so a sentence asked as a query and kept as another row's document is one
    id: the loss never takes it for the anchor's negative and the two rows are kept apart in batches. A distractor
    that is an anchor's own sentence is still left out."""
    path = write_csv(
        tmp_path / "pairs.csv",
        ["anchor", "positive", "negative"],
        [["good film", "great movie", "bad food"], ["great movie", "good film", "poor phone"]],
    )
    spec = TaskSpec("retrieval", "contrastive", prompt={"text": "query", "text_pair": "document"})
    task = RunTask(spec, DataSpec({"train_file": str(path)}, text_column="anchor", text_pair_column="positive"))
    task.options["negative_columns"] = ["negative"]
    table, _ = columns.table_columns(
        read_table(path), [task], "pairs.csv", 2, documents=["good film", "other text"], prompt_for=_prompted([task])
    )
    assert table["text"] == ["query: good film", "query: great movie", "query: other text"]
    assert table["text_pair"] == ["passage: great movie", "passage: good film", "passage: other text"]
    assert table["negatives"][:2] == [["passage: bad food"], ["passage: poor phone"]]
    targets = table[columns.TARGET_PREFIX + "retrieval"]
    assert targets[0][1:] == [0, 1, 2] and targets[1][1:] == [1, 0, 3]  # "good film" is 0 as a query and a document
    keys = task_io(spec).batch_keys(spec, lambda: targets)
    assert set(keys[0]) & set(keys[1])  # the two rows share a sentence: never in one batch
    plain, _ = columns.table_columns(read_table(path), [task], "pairs.csv", 2, documents=["good film", "other text"])
    assert plain["text"] == ["good film", "great movie", "other text"] and plain._fingerprint != table._fingerprint
    assert plain[columns.TARGET_PREFIX + "retrieval"] == targets  # the identity the unprompted table gives


def test_tasks_sharing_texts_with_different_prompts_are_refused(synthetic_csv):
    data = DataSpec({"train_file": str(synthetic_csv)}, text_column="text", label_column="sentiment")
    texts = DataSpec({"train_file": str(synthetic_csv)}, text_column="text")
    tasks = [
        RunTask(TaskSpec("sentiment", "classification", labels=["negative", "positive"], prompt="query"), data),
        RunTask(TaskSpec("distillation", "distillation"), texts),
    ]
    with pytest.raises(ValueError, match=r"tasks \['distillation', 'sentiment'\] read the same text texts"):
        columns.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2, prompt_for=_prompted(tasks))
    tasks[1] = RunTask(TaskSpec("distillation", "distillation", prompt="query"), texts)
    table, _ = columns.table_columns(read_table(synthetic_csv), tasks, "train.csv", 2, prompt_for=_prompted(tasks))
    assert all(text.startswith("query: ") for text in table["text"])
