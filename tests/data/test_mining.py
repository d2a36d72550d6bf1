"""sentmtl/data/mining.py: the ranking (sentence-transformers' selection: the anchor's own text and its positives never,
margins from its least similar positive, max / min score, the range counted among the candidates left, top and random
sampling), the cache (hit, miss, what the key follows), and a source's training rows with their mined negatives
(rows with fewer dropped and counted, ids continued, prompts)."""

import logging
import math
import random
import zlib

import numpy as np
import pytest
import torch
from helpers import counting_miner, write_dict_csv

from sentmtl.data.mining import mine_hard_negatives, rank_negatives
from sentmtl.data.plan import DataSpec, RunTask
from sentmtl.data.sources import TARGET_PREFIX, build_sources
from sentmtl.model.task_spec import TaskSpec
from sentmtl.tasks.mining_settings import MiningSettings
from sentmtl.training.arguments import DataArguments

# Documents 0-5 at these cosines to the one query [1, 0].
COSINES = [0.99, 0.95, 0.9, 0.8, 0.7, 0.5]
QUERY = torch.tensor([[1.0, 0.0]])
DOCUMENTS = torch.tensor([[c, math.sqrt(1 - c * c)] for c in COSINES])


def ranked(positives=(2,), own=-1, rng=None, **settings):
    return rank_negatives(QUERY, DOCUMENTS, [list(positives)], [own], MiningSettings(**settings), rng)[0]


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"num_negatives": 2}, [0, 1]),  # most similar first; the positive (2) never
        ({"num_negatives": 2, "own": 0}, [1, 3]),  # nor the anchor's own text
        ({"num_negatives": 2, "positives": (2, 0)}, [1, 3]),  # nor any positive of the same anchor
        ({"num_negatives": 2, "relative_margin": 0.05}, [3, 4]),  # above 0.9 − 0.045 dropped
        ({"num_negatives": 2, "absolute_margin": 0.12}, [4, 5]),  # cosine + 0.12 above 0.9 dropped
        ({"num_negatives": 2, "positives": (2, 3), "relative_margin": 0.05}, [4, 5]),  # from the least similar (0.8)
        ({"num_negatives": 2, "max_score": 0.92}, [3, 4]),
        ({"num_negatives": 4, "min_score": 0.75}, [0, 1, 3]),  # fewer than asked: what is left
        ({"num_negatives": 2, "range_min": 1}, [1, 3]),
        ({"num_negatives": 2, "range_min": 1, "relative_margin": 0.05}, [4, 5]),  # ranks among those left
        ({"num_negatives": 2, "range_max": 2}, [0, 1]),
        # range_max bounds the candidates fetched (range_max + positives + 1 = 4: documents 0-3), margins then apply.
        ({"num_negatives": 2, "range_max": 2, "relative_margin": 0.05}, [3]),
        ({"num_negatives": 1, "range_min": 1, "range_max": 2, "relative_margin": 0.05}, []),
        ({"num_negatives": 9, "range_max": 9}, [0, 1, 3, 4, 5]),  # fewer documents than the window
    ],
)
def test_the_ranking_follows_sentence_transformers_rules(settings, expected):
    assert ranked(**settings) == expected


def test_random_sampling_draws_from_the_window_best_first_and_takes_all_when_fewer():
    draws = {
        tuple(ranked(rng=random.Random(seed), num_negatives=2, range_max=5, sampling_strategy="random"))
        for seed in range(20)
    }
    assert len(draws) > 1 and all(set(d) <= {0, 1, 3, 4, 5} and list(d) == sorted(d) for d in draws)
    assert ranked(rng=random.Random(0), num_negatives=3, min_score=0.75, sampling_strategy="random") == [0, 1, 3]


def _vector(text):
    return np.random.default_rng(zlib.crc32(text.encode())).standard_normal(8)


ANCHORS = ["a one", "a two", "a three", "a one"]  # "a one" asks twice: both its positives are no negative of it
POSITIVES = ["p one", "p two", "p three", "p four"]
CORPUS = ["c one", "c two", "a two"]


def test_mined_negatives_never_hold_the_anchor_or_its_positives(tmp_path):
    miner = counting_miner()
    mined, hit = mine_hard_negatives(
        ANCHORS, POSITIVES, miner, MiningSettings(num_negatives=4), CORPUS, cache_dir=tmp_path
    )
    assert not hit and len(mined) == 4 and mined[0] == mined[3]  # a row gets its anchor's negatives
    for anchor, found in zip(ANCHORS, mined):
        own = {p for a, p in zip(ANCHORS, POSITIVES) if a == anchor}
        assert anchor not in found and not own & set(found) and len(found) == len(set(found))
    assert "a two" not in mined[1] and "a two" in mined[0]  # a corpus text equal to an anchor is that anchor's own
    # The miner's own ranking, by hand: cosines of the vectors.
    unit = lambda t: _vector(t) / np.linalg.norm(_vector(t))  # noqa: E731
    candidates = [d for d in dict.fromkeys(CORPUS + POSITIVES) if d not in ("p three", "a three")]
    assert mined[2] == sorted(candidates, key=lambda d: -unit("a three") @ unit(d))[:4]
    # Anchors and documents embedded once each, deduplicated (the corpus first, then the positives).
    assert miner.calls == [["a one", "a two", "a three"], list(dict.fromkeys(CORPUS + POSITIVES))]


def test_the_cache_is_hit_and_its_key_follows_texts_miner_settings_and_prompts(tmp_path):
    miner = counting_miner()
    top = MiningSettings(num_negatives=2)

    def mine(anchors=ANCHORS, settings=top, corpus=CORPUS, who=miner, seed=0, **prompts):
        return mine_hard_negatives(anchors, POSITIVES, who, settings, corpus, cache_dir=tmp_path, seed=seed, **prompts)

    first, hit = mine()
    assert not hit and len(miner.calls) == 2
    again, hit = mine(seed=7)  # top: the seed does not matter
    assert hit and again == first and len(miner.calls) == 2
    misses = [
        mine(anchors=["a one", "a two", "a three", "a five"]),
        mine(settings=MiningSettings(num_negatives=2, relative_margin=0.1)),
        mine(corpus=CORPUS[:2]),
        mine(who=counting_miner(key="other weights")),
        mine(query_prompt="query: "),
        mine(document_prompt="passage: "),
        mine(settings=MiningSettings(num_negatives=2, sampling_strategy="random"), seed=0),
        mine(settings=MiningSettings(num_negatives=2, sampling_strategy="random"), seed=1),
    ]
    assert not any(hit for _, hit in misses)
    assert len(list(tmp_path.glob("*.arrow"))) == 1 + len(misses)


def test_prompts_prefix_the_embedded_texts_not_the_negatives(tmp_path):
    miner = counting_miner()
    mined, _ = mine_hard_negatives(
        ANCHORS,
        POSITIVES,
        miner,
        MiningSettings(num_negatives=1),
        query_prompt="q: ",
        document_prompt="d: ",
        cache_dir=tmp_path,
    )
    embedded = [text for call in miner.calls for text in call]
    assert {t for t in embedded if t.startswith("q: ")} == {"q: " + a for a in ANCHORS}
    assert {t for t in embedded if t.startswith("d: ")} == {"d: " + p for p in POSITIVES}
    assert all(not n.startswith(("q: ", "d: ")) for found in mined for n in found)


def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, caplog):
    miner = counting_miner()
    first, _ = mine_hard_negatives(ANCHORS, POSITIVES, miner, MiningSettings(num_negatives=1), cache_dir=tmp_path)
    (arrow,) = tmp_path.glob("*.arrow")
    arrow.write_bytes(arrow.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING):
        again, hit = mine_hard_negatives(ANCHORS, POSITIVES, miner, MiningSettings(num_negatives=1), cache_dir=tmp_path)
    assert "Mined negatives cache" in caplog.text and "rebuilding" in caplog.text
    assert not hit and again == first and len(miner.calls) == 4


# -- a source's training rows ------------------------------------------------------------------------------------------


def _pairs(tmp_path):
    rows = [
        {"anchor": f"the {w} anchor .", "positive": f"a {w} positive !", "score": s}
        for w, s in zip(["good", "bad", "fine", "poor", "best", "worst"], [0.9, 0.9, 0.9, 0.9, 0.9, 0.1])
    ]
    train = write_dict_csv(tmp_path / "train.csv", rows)
    dev = write_dict_csv(tmp_path / "dev.csv", rows[:2])
    return DataSpec({"train_file": str(train), "validation_file": str(dev)}, "anchor", "positive")


def test_a_source_trains_on_rows_with_all_their_negatives_and_logs_the_counts(tmp_path, caplog):
    miners = {}

    def miner_for(name):
        return miners.setdefault(name, counting_miner(own_model=name is None))

    # 5 rows above min_score, 4 positives for each anchor's 4 candidates; range_max 5 of 4 documents left: with
    # min_score -1 every row finds 4, with a max_score some find fewer.
    settings = {"num_negatives": 3, "max_score": 0.3, "range_max": 5}
    task = RunTask(
        TaskSpec("retrieval", "contrastive"), _pairs(tmp_path), {"min_score": 0.5, "hard_negatives": settings}
    )
    with caplog.at_level(logging.INFO, logger="sentmtl.data.mining"):
        source = build_sources([task], DataArguments(), 0, miner_for=miner_for)[0]
    mined, _ = mine_hard_negatives(
        [f"the {w} anchor ." for w in ["good", "bad", "fine", "poor", "best"]],
        [f"a {w} positive !" for w in ["good", "bad", "fine", "poor", "best"]],
        miners[None],
        MiningSettings(**settings),
        cache_dir=tmp_path / "teacher_cache",
    )
    full = [i for i, found in enumerate(mined) if len(found) == 3]
    assert 0 < len(full) < 5  # some rows keep all 3, some find fewer
    assert source.train.num_rows == len(full)
    assert (
        f"hard negatives mined for 'retrieval': {len(full)} of 5 training rows have 3; {5 - len(full)} have fewer"
        in caplog.text
    )
    table = source.train
    assert table["negatives"] == [mined[i] for i in full]
    targets = np.asarray(table[TARGET_PREFIX + "retrieval"])
    assert targets.shape == (len(full), 6) and (targets[:, 0] == 1).all()
    ids = {}
    for row, texts in zip(targets, zip(table["text"], table["text_pair"], *zip(*table["negatives"]))):
        for i, text in zip(row[1:], texts):
            assert ids.setdefault(text, i) == i  # one id per text across the columns
    assert len(set(ids.values())) == len(ids)
    assert "negatives" not in source.eval.column_names  # evaluation is not mined


def test_prompted_texts_are_mined_as_sentences_with_the_task_prompts_when_the_run_model_mines(tmp_path):
    prefixes = {"text": "query: ", "text_pair": "passage: ", "negatives": "passage: "}
    built = {}

    def miner_for(name):
        return built.setdefault(name, counting_miner(own_model=name is None))

    def prompt_for(spec, role):
        return prefixes[role]

    for name in (None, "another-encoder"):
        options = {"hard_negatives": {"num_negatives": 1, "miner": name}}
        task = RunTask(TaskSpec("retrieval", "contrastive"), _pairs(tmp_path), options)
        table = build_sources([task], DataArguments(), 0, prompt_for=prompt_for, miner_for=miner_for)[0].train
        assert all(
            n.startswith("passage: ") and not n.startswith("passage: passage: ") for n in sum(table["negatives"], [])
        )
        embedded = [text for call in built[name].calls for text in call]
        if name is None:  # the task's prompts are the run model's own
            assert "query: the good anchor ." in embedded and "passage: a good positive !" in embedded
        else:  # another encoder takes none
            assert "the good anchor ." in embedded and not any(t.startswith(("query", "passage")) for t in embedded)


def test_a_mined_negative_is_numbered_as_its_sentence_whatever_its_prompt(tmp_path):
    """With query / document prompts, a mined negative that is another row's anchor has that anchor's id (as without
    prompts): the loss and the batches compare sentences, not prompted inputs."""
    prefixes = {"text": "query: ", "text_pair": "passage: ", "negatives": "passage: "}
    data = _pairs(tmp_path)
    corpus = {"file": data.data["train_file"], "columns": ["anchor"]}  # the anchors are candidates too
    options = {"hard_negatives": {"num_negatives": 8, "corpus": corpus}}
    task = RunTask(TaskSpec("retrieval", "contrastive"), data, options)
    table = build_sources(
        [task], DataArguments(), 0, prompt_for=lambda spec, role: prefixes[role], miner_for=lambda n: counting_miner()
    )[0].train
    ids, anchors = {}, {t.removeprefix("query: ") for t in table["text"]}
    columns = zip(table["text"], table["text_pair"], *zip(*table["negatives"]))
    for row, texts in zip(table[TARGET_PREFIX + "retrieval"], columns):
        for i, text in zip(row[1:], texts):
            sentence = text.removeprefix("query: ").removeprefix("passage: ")
            assert ids.setdefault(sentence, i) == i  # one id per sentence, in every role
    assert anchors & {n.removeprefix("passage: ") for n in sum(table["negatives"], [])}  # some negative is an anchor
    assert len(set(ids.values())) == len(ids)


def test_no_row_with_enough_negatives_is_an_error(tmp_path):
    task = RunTask(
        TaskSpec("retrieval", "contrastive"), _pairs(tmp_path), {"hard_negatives": {"num_negatives": 1, "min_score": 2}}
    )
    with pytest.raises(ValueError, match=r"train.csv: no training row has 1 mined hard negatives; lower num_negatives"):
        build_sources([task], DataArguments(), 0, miner_for=lambda name: counting_miner())
    with pytest.raises(ValueError, match="hard_negatives needs a miner"):
        build_sources([task], DataArguments(), 0)


def test_scoring_in_chunks_changes_nothing(monkeypatch):
    """A large corpus is scored a few anchors at a time (memory bounded by MAX_SCORES), with the same result."""
    import sentmtl.data.mining

    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(50, 8, generator=generator), dim=-1)
    documents = torch.nn.functional.normalize(torch.randn(80, 8, generator=generator), dim=-1)
    settings = MiningSettings(num_negatives=3, relative_margin=0.05)
    whole = rank_negatives(queries, documents, [[i] for i in range(50)], [-1] * 50, settings)
    monkeypatch.setattr(sentmtl.data.mining, "MAX_SCORES", 200)  # 2 anchors × 80 documents at a time
    assert rank_negatives(queries, documents, [[i] for i in range(50)], [-1] * 50, settings) == whole
