"""benchmarks/retrieval.py's measurement: a prompted model's queries and documents each take their role's prompt."""

import sys

import numpy as np
from helpers import REPO_ROOT

import sentmtl

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import retrieval  # noqa: E402

PROMPTS = {"query": "i really ", "document": "this is a "}
ROWS = [  # genre, file, year, id, score (0-5), sentence1, sentence2
    ("g", "f", "y", "1", "5.0", "the movie was great .", "the film was great ."),
    ("g", "f", "y", "2", "4.5", "the food was awful .", "the meal was awful ."),
    ("g", "f", "y", "3", "1.0", "the phone was fine .", "the movie was bad ."),
]


def _stsb(folder):
    folder.mkdir()
    for name in ("sts-dev.csv", "sts-train.csv"):
        (folder / name).write_text("\n".join("\t".join(row) for row in ROWS) + "\n")
    return folder


def test_a_prompted_models_queries_and_documents_take_their_roles_prompts(tiny_encoder_dir, tmp_path):
    """Review item 5: the embedder gave every text the default prompt (document), so the queries were not embedded
    as the model was trained to (and as the run's own IR evaluation embeds them)."""
    retrieval_task = {"name": "retrieval", "type": "contrastive", "prompt": {"text": "query", "text_pair": "document"}}
    model, tokenizer = sentmtl.load_model_and_tokenizer(
        str(tiny_encoder_dir),
        embedding_size=16,
        prompts=PROMPTS,
        default_prompt_name="document",
        tasks=[retrieval_task],
    )
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    embed, loaded = retrieval.sentmtl_embedder(tmp_path / "m")
    texts = ["the movie was great ."]
    for role, name in (("query", "query"), ("document", "document"), (None, None)):
        expected = sentmtl.encode(loaded, texts, tokenizer, precision="fp32", prompt_name=name)
        np.testing.assert_allclose(embed(texts, role), expected, atol=1e-6, err_msg=str(role))
    assert not np.allclose(embed(texts, "query"), embed(texts, "document"), atol=1e-4)

    roles = []

    def recording(texts, role):
        roles.append((role, list(texts)))
        return embed(texts, role)

    measured = retrieval.measure(recording, _stsb(tmp_path / "stsb"), [16])
    assert measured["queries"] == 2 and measured["documents"] == 3
    assert roles[0] == ("query", ["the movie was great .", "the food was awful ."])
    assert [role for role, _ in roles] == ["query", "document", "document", None, None]


def test_the_mined_scenarios_run_files():
    """retrieval_sts_mined mines among the training pairs' positives; retrieval_sts_mined_corpus among STS-B's train
    sentences too, read from the task's own STS-B folder (training texts only)."""
    for scenario, corpus in (("retrieval_sts_mined", None), ("retrieval_sts_mined_corpus", True)):
        (task,) = [t for t in retrieval.edited_run_file(scenario)["tasks"] if t["name"] == "retrieval"]
        mining = dict(task["hard_negatives"])
        assert mining.pop("corpus", None) == ({"stsb": task["data"]["stsb"]} if corpus else None)
        assert mining == retrieval.MINING


def test_the_strict_mining_scenario_takes_three_negatives_within_a_tighter_margin():
    (task,) = [t for t in retrieval.edited_run_file("retrieval_sts_mined3_strict")["tasks"] if t["name"] == "retrieval"]
    assert task["hard_negatives"] == {
        "num_negatives": 3,
        "range_max": 50,
        "relative_margin": 0.1,
        "sampling_strategy": "top",
    }
