"""sentmtl/tasks/mining_settings.py and the contrastive type's hard_negatives option: sentence-transformers' settings
and defaults, each bad value refused naming it and what is accepted, and the combinations the type refuses."""

import pytest

from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.io import Readers, task_io
from sentmtl.tasks.mining_settings import MiningSettings, mining_settings

PAIRS = DataSpec({"train_file": "pairs.csv"}, text_column="anchor", text_pair_column="positive")
RETRIEVAL = TaskSpec("retrieval", "contrastive")


def test_the_defaults_are_sentence_transformers():
    import inspect

    from sentence_transformers.util import mine_hard_negatives

    theirs = inspect.signature(mine_hard_negatives).parameters
    ours = mining_settings({})
    for name in ("num_negatives", "range_min", "range_max", "max_score", "min_score", "absolute_margin"):
        assert getattr(ours, name) == theirs[name].default, name
    assert ours.relative_margin == theirs["relative_margin"].default
    assert ours.sampling_strategy == theirs["sampling_strategy"].default == "top"
    assert ours.miner is None and ours.corpus is None


def test_range_max_is_derived_as_sentence_transformers_derives_it():
    assert MiningSettings(num_negatives=3).window(max_positives=2) == 0 + 3 + 2
    assert MiningSettings(num_negatives=3, range_min=5, relative_margin=0.05).window(1) == 5 + 30 + 1
    assert MiningSettings(num_negatives=1, max_score=0.9).window(1) == 11
    assert MiningSettings(range_max=50).window(7) == 50


@pytest.mark.parametrize(
    "value, message",
    [
        ({"range_min": 5, "range_max": 3}, r"range_min 5 must be below range_max 3"),
        ({"num_negatives": 3, "range_min": 8, "range_max": 10}, r"num_negatives 3: only 2 candidates"),
        ({"nagatives": 1}, r"unknown setting\(s\) \['nagatives'\]; accepted: num_negatives, range_min"),
        ({"sampling_strategy": "foo"}, r"sampling_strategy 'foo': one of top, random"),
        ({"num_negatives": 0}, r"num_negatives 0: an integer >= 1"),
        ({"num_negatives": 1.5}, r"num_negatives 1.5: an integer >= 1"),
        ({"range_min": -1}, r"range_min -1: an integer >= 0"),
        ({"relative_margin": "5%"}, r"relative_margin '5%': a number"),
        ({"max_score": float("nan")}, r"max_score nan: a number"),
        ({"min_score": 0.9, "max_score": 0.5}, r"min_score 0.9 is above max_score 0.5"),
        ({"miner": ""}, r"miner '': an encoder name or path"),
        ({"corpus": "file.csv"}, r"corpus 'file.csv': use \{stsb: folder\} or \{file: path"),
        ({"corpus": {"file": "c.csv", "columns": []}}, r"corpus .*: use \{stsb: folder\}"),
        ([1], r"hard_negatives \[1\]: a mapping of settings"),
    ],
)
def test_bad_settings_are_refused_naming_the_value_and_what_is_accepted(value, message):
    with pytest.raises(ValueError, match=message):
        mining_settings(value)
    with pytest.raises(ValueError, match=r"tasks\[0\]: hard_negatives"):  # when the run file is read
        RunTask.from_dict(
            {"name": "r", "type": "contrastive", "data": {"stsb": "x"}, "hard_negatives": value}, "tasks[0]"
        )


def test_the_key_takes_the_seed_only_for_random_sampling():
    top, random = MiningSettings(), MiningSettings(sampling_strategy="random")
    assert top.key(1) == top.key(2)
    assert random.key(1) != random.key(2)
    assert MiningSettings(miner="a").key(0) == MiningSettings(miner="b").key(0)  # the miner keys by its weights


def test_only_a_contrastive_task_takes_it_and_not_beside_negative_columns_or_a_stream():
    with pytest.raises(ValueError, match="hard_negatives: only for contrastive tasks"):
        RunTask(TaskSpec("s", "similarity"), PAIRS, {"hard_negatives": {}})
    with pytest.raises(ValueError, match="hard_negatives mines the negatives that negative_columns would read"):
        RunTask(RETRIEVAL, PAIRS, {"hard_negatives": {}, "negative_columns": ["negative"]})
    stream = DataSpec({"train_file": "p.jsonl", "validation_file": "d.jsonl", "streaming": True})
    with pytest.raises(ValueError, match="hard_negatives ranks every training row's candidates over the whole table"):
        RunTask(RETRIEVAL, stream, {"hard_negatives": {}})
    mined = RunTask(RETRIEVAL, PAIRS, {"hard_negatives": {"num_negatives": 1}})
    assert mined.source_key() != RunTask(RETRIEVAL, PAIRS).source_key()  # its rows change: a source of its own
    assert mined.source_key() != RunTask(RETRIEVAL, PAIRS, {"hard_negatives": {"num_negatives": 2}}).source_key()


def test_the_request_reads_its_corpus_through_the_readers(tmp_path):
    import datasets

    readers = Readers(
        table=lambda path: datasets.Dataset.from_dict(
            {
                "anchor": ["a1"],
                "positive": ["p1"],
                "other": [
                    "x",
                ],
            }
        ),
        stsb_texts=lambda folder: [f"sts {folder}"],
    )
    io = task_io(RETRIEVAL)
    assert io.mining(RunTask(RETRIEVAL, PAIRS), readers) is None
    request = io.mining(RunTask(RETRIEVAL, PAIRS, {"hard_negatives": {"corpus": {"file": "c.csv"}}}), readers)
    assert request.corpus == ["a1", "p1"] and request.settings == MiningSettings(corpus={"file": "c.csv"})
    given = {"hard_negatives": {"corpus": {"file": "c.csv", "columns": ["other"]}}}
    assert io.mining(RunTask(RETRIEVAL, PAIRS, given), readers).corpus == ["x"]
    assert io.mining(RunTask(RETRIEVAL, PAIRS, {"hard_negatives": {"corpus": {"stsb": "f"}}}), readers).corpus == [
        "sts f"
    ]
    with pytest.raises(ValueError, match=r"hard_negatives corpus c.csv: no column \['gone'\]"):
        io.mining(
            RunTask(RETRIEVAL, PAIRS, {"hard_negatives": {"corpus": {"file": "c.csv", "columns": ["gone"]}}}), readers
        )


def test_mined_negatives_continue_the_tables_numbering():
    """A negative that is a row's text takes that text's id (the loss and the batches compare ids); a new one the next
    free id, the same for the same text."""
    io = task_io(RETRIEVAL)
    texts = {
        "text": ["a", "b", "c"],
        "text_pair": ["p", "q", "p"],
        "negatives": [["q", "new"], ["p", "a"], ["new", "x"]],
    }
    targets = [[1, 0, 1], [1, 2, 3], [1, 4, 1]]
    assert io.with_negatives(RunTask(RETRIEVAL, PAIRS), targets, texts) == [
        [1, 0, 1, 3, 5],
        [1, 2, 3, 1, 0],
        [1, 4, 1, 5, 6],
    ]
