"""`--torch_compile` end to end: inductor's compiled steps against eager ones over 50 steps of length-grouped batches
(the same batches, the loss within 1e-5, one graph), and run_mtl.py's prompted run of two sources compiled
(aot_eager) against the same run eager. Slow: inductor compiles for tens of seconds on a CPU."""

import json

import numpy as np
import pytest
import torch
from helpers import retrieval_flags, traced_run, without_dropout
from test_prompted_run import prompted_run_file

import sentmtl
from sentmtl.training.run import main


@pytest.mark.slow
def test_inductor_steps_equal_eager_ones_over_50_steps(tiny_encoder_dir, tmp_path):
    """fp32, dropout off (compiled dropout draws other random numbers): the same batches in the same order, the loss
    of every step within 1e-5 of eager's, every batch length (about 20 over 2 epochs) in one graph."""
    runs = []
    for backend in (None, "inductor"):
        torch.manual_seed(0)
        model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
        runs.append(
            traced_run(
                without_dropout(model),
                tokenizer,
                tmp_path / str(backend),
                backend,
                rows=200,
                max_steps=50,
                learning_rate=1e-4,
                bf16=False,
            )
        )
    (eager_losses, eager_batches, _, _), (losses, batches, graphs, _) = runs
    assert batches == eager_batches and len({len(batch[0]) for batch in batches}) > 10
    assert len(losses) == 50
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-5)
    assert graphs == 1


@pytest.mark.slow
def test_compiled_prompted_run_of_two_sources_equals_eager(encoder_without_dropout, retrieval_files, tmp_path):
    """A prompted run (the prompts are in the text, before tokenising) of a classification source and a contrastive
    one (pairs): a graph for each source's batch layout, and each batch leaves the other task's head without a
    gradient, as eager does (`compiling.drop_untrained_head_gradients`); the training loss and every evaluation
    metric are the eager run's. Dropout off: compiled dropout draws other random numbers."""

    results = []
    for name, compiled in (("eager", []), ("compiled", ["--torch_compile_backend", "aot_eager"])):
        out = tmp_path / name
        flags = retrieval_flags(
            encoder_without_dropout, out, "--num_train_epochs", "1", "--bf16", "false", "--dropout", "0", *compiled
        )
        torch._dynamo.reset()
        assert main([prompted_run_file(tmp_path, retrieval_files), *flags]) == 0
        results.append([json.loads((out / f"{kind}_results.json").read_text()) for kind in ("train", "eval")])
    (eager_train, eager_eval), (train, evaluation) = results
    assert train["train_loss"] == pytest.approx(eager_train["train_loss"], rel=1e-6)
    assert set(evaluation) == set(eager_eval)
    for key, value in eager_eval.items():
        if not key.endswith(("_runtime", "_per_second")):
            assert evaluation[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
