"""benchmarks/mining.py on a slice: sentmtl's mined negatives agree with sentence-transformers' mine_hard_negatives
(the bundled MiniLM, no prompts, top sampling) on >= 95% of their (anchor, negative) pairs."""

import json
import os
import sys

import pytest
from helpers import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import mining  # noqa: E402


@pytest.mark.real_encoder
@pytest.mark.slow
@pytest.mark.parametrize(
    "settings",
    [
        mining.DEFAULTS,  # retrieval_sts_mined's settings
        {"num_negatives": 3, "range_min": 2, "range_max": 20, "max_score": 0.8, "sampling_strategy": "top"},
    ],
)
def test_mined_negatives_agree_with_sentence_transformers_on_stsb_pairs(settings, tmp_path):
    if not (mining.DEFAULT_STSB / "sts-train.csv").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs STS-B at {mining.DEFAULT_STSB}")
        pytest.skip(f"no STS-B at {mining.DEFAULT_STSB}")
    anchors, positives = mining.stsb_pairs(mining.DEFAULT_STSB, rows=300)
    result = mining.compare(anchors, positives, settings, tmp_path)
    assert result["pairs"] == 300 and result["theirs"] > 0
    assert result["overlap"] >= 0.95, result


def test_record_keeps_one_row_per_settings_and_writes_the_table(tmp_path):
    one, three = {"num_negatives": 1, "range_max": 50}, {"num_negatives": 3, "range_max": 50}
    result = {"pairs": 1406, "ours": 1400, "theirs": 1400, "both": 1399, "overlap": 1399 / 1400}
    mining.record(tmp_path, one, result)
    mining.record(tmp_path, three, {**result, "both": 1400, "overlap": 1.0})
    mining.record(tmp_path, one, {**result, "both": 1386, "overlap": 0.99})  # measured again: replaces its row
    mining.record(tmp_path, one, {**result, "pairs": 300, "overlap": 0.98})  # a slice is a row of its own
    rows = json.loads((tmp_path / "agreement.json").read_text())
    assert [(row["settings"], row["pairs"], row["both"]) for row in rows] == [
        (three, 1406, 1400),
        (one, 1406, 1386),
        (one, 300, 1399),
    ]
    table = (tmp_path / "agreement.md").read_text().splitlines()
    assert table[-3:] == [
        "| num_negatives 3, range_max 50 | 1,406 | 1,400 | 1,400 | 1,400 | 1.0000 |",
        "| num_negatives 1, range_max 50 | 1,406 | 1,400 | 1,400 | 1,386 | 0.9900 |",
        "| num_negatives 1, range_max 50 | 300 | 1,400 | 1,400 | 1,399 | 0.9800 |",
    ]
