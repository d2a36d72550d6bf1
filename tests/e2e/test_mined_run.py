"""A run whose contrastive task mines its hard negatives (hard_negatives), end to end through the run API on the tiny
encoder: mined after min_score, counted in the log, trained on, evaluated as before, and read from the cache by the
next run."""

import csv
import logging
import re

from helpers import retrieval_flags, retrieval_run_file

from sentmtl.training.run import parse_args, run


def test_a_run_mines_hard_negatives_trains_on_them_and_reuses_them(tiny_encoder_dir, retrieval_files, tmp_path, caplog):
    settings = {"num_negatives": 2, "range_max": 10, "max_score": 0.999}
    run_file = retrieval_run_file(tmp_path, retrieval_files, min_score=0.3, hard_negatives=settings, batch_size=8)
    with open(retrieval_files["train"]) as handle:
        pairs = [row for row in csv.DictReader(handle) if float(row["score"]) >= 0.3]
    with caplog.at_level(logging.INFO, logger="sentmtl"):
        result = run(*parse_args([str(run_file), *retrieval_flags(tiny_encoder_dir, tmp_path / "one")]))
    mined = [r.getMessage() for r in caplog.records if "hard negatives mined" in r.getMessage()]
    assert len(mined) == 1 and "(read from the cache)" not in mined[0]
    counts = re.search(rf"(\d+) of {len(pairs)} training rows have 2; (\d+) have fewer and do not train", mined[0])
    kept = int(counts[1])
    assert 0 < kept and kept + int(counts[2]) == len(pairs)
    assert f"feeds retrieval: {kept} training rows" in caplog.text
    assert result.train_metrics["train_loss"] > 0 and 0 <= result["eval_retrieval_recall@1"] <= 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sentmtl"):
        again = run(*parse_args([str(run_file), *retrieval_flags(tiny_encoder_dir, tmp_path / "two")]))
    assert "hard negatives mined for 'retrieval' (read from the cache)" in caplog.text
    assert again["eval_retrieval_recall@1"] == result["eval_retrieval_recall@1"]  # the same rows, the same run
