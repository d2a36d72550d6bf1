"""benchmarks/mining.py on a slice: sentmtl's mined negatives agree with sentence-transformers' mine_hard_negatives
(the bundled MiniLM, no prompts, top sampling) on >= 95% of their (anchor, negative) pairs."""

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
