"""sentmtl/training/compiling.py: `--torch_compile` compiles one graph for length-grouped batches of every length,
its steps match the eager ones with each option it allows, its checkpoints have the plain keys and resume, and
activation checkpointing beside it is refused. Backend `aot_eager` here (dynamo and AOT autograd, the parts that decide
what is computed, without inductor's code generation: seconds, and equal to eager to the bit). Inductor against eager
over 50 steps and a compiled prompted run of two sources: tests/e2e/test_compiled_runs.py; two compiled processes:
tests/e2e/test_two_processes.py."""

import numpy as np
import pytest
import torch
from accelerate.utils import TorchDynamoPlugin
from helpers import traced_run, training_args, varied_table, without_dropout
from safetensors import safe_open

import sentmtl
from sentmtl.data.batching import MultiSourceDataset
from sentmtl.data.columns import TARGET_PREFIX
from sentmtl.training.callbacks import FreezeCallback, WeightAveragingCallback
from sentmtl.training.compiling import with_dynamic_shapes
from sentmtl.training.trainer import SentMtlTrainer


def test_compiled_for_every_length_at_once():
    """The Trainer leaves `dynamic` unset (torch's automatic dynamic shapes: 3 graphs in 2 epochs of length-grouped
    batches); sentmtl compiles for every length from the start, unless the Trainer chose (Neuron's static shapes)."""
    args = with_dynamic_shapes({"dynamo_plugin": TorchDynamoPlugin(backend="inductor")})
    assert args["dynamo_plugin"].dynamic is True
    assert with_dynamic_shapes({"dynamo_plugin": TorchDynamoPlugin(dynamic=False)})["dynamo_plugin"].dynamic is False
    assert with_dynamic_shapes({"mixed_precision": "no"}) == {"mixed_precision": "no"}  # not compiled


OPTIONS = {
    # Every option a compiled run allows, in two runs (LoRA refuses unfreezing): Matryoshka, learned (uncertainty)
    # loss weights, the unfreezing schedule (a second graph when the backbone starts training) and the weight average.
    "matryoshka+uncertainty+unfreezing+ema": (
        {"matryoshka_dims": [16, 8], "loss_weighting": "uncertainty"},
        {"freeze": "backbone", "unfreeze_backbone_at_epoch": 1, "ema_decay": 0.9},
        (FreezeCallback.from_args, lambda args: WeightAveragingCallback(args.ema_decay)),
        2,
    ),
    "lora+bf16": ({"lora": {"r": 4}}, {"bf16": True}, (), 1),
}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_compiled_steps_equal_eager_ones(tiny_encoder_dir, tmp_path, option):
    """The same batches in the same order, the same loss at every step and the same weights at the end, with every
    length of a batch in one graph (and one more where the backbone is unfrozen: its parameters start to train)."""
    config, overrides, callbacks, graphs = OPTIONS[option]
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, **config)
        runs.append(
            (
                *traced_run(
                    without_dropout(model),
                    tokenizer,
                    tmp_path / str(compiled),
                    "aot_eager" if compiled else None,
                    callbacks,
                    **overrides,
                ),
                model,
            )
        )
    (eager_losses, eager_batches, _, _, eager), (losses, batches, compiled_graphs, _, model) = runs
    assert batches == eager_batches and len({len(batch[0]) for batch in batches}) > 5
    assert len(losses) == 12
    np.testing.assert_allclose(losses, eager_losses, rtol=1e-6)
    for (name, value), (_, expected) in zip(model.state_dict().items(), eager.state_dict().items()):
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=name)
    assert compiled_graphs == graphs


def test_heads_a_compiled_step_did_not_train_keep_no_gradient(tiny_encoder_dir, tmp_path):
    """Two sources, one per task: a batch of one source does not train the other task's head. Eager, that head has
    no gradient and AdamW leaves it alone; the compiled backward gave it zeros, and AdamW moved it on its moments and
    decayed it (1.3e-4 away from eager's after one batch). Dropped now: every weight is eager's, to the bit."""
    weights = []
    for backend in (None, "aot_eager"):
        torch.manual_seed(0)
        model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
        table = varied_table(model, tokenizer)
        parts = [table.remove_columns(f"{TARGET_PREFIX}{task.name}") for task in reversed(model.tasks)]
        dataset = MultiSourceDataset(parts, [[task] for task in model.tasks])
        traced_run(without_dropout(model), tokenizer, tmp_path / str(backend), backend, dataset=dataset, max_steps=8)
        weights.append(model.state_dict())
    for name, value in weights[1].items():
        torch.testing.assert_close(value, weights[0][name], rtol=0, atol=0, msg=name)


def test_compiled_checkpoints_have_plain_keys_and_resume(tiny_encoder_dir, tmp_path):
    """The Trainer saves the model under the compiled wrapper (no `_orig_mod.` prefix), and a compiled run resumed
    from its checkpoint ends on the weights of the run that was not interrupted."""

    def fresh():
        torch.manual_seed(0)
        model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
        return without_dropout(model), tokenizer

    model, tokenizer = fresh()
    traced_run(model, tokenizer, tmp_path / "whole", "aot_eager", max_steps=8, save_strategy="steps", save_steps=4)
    checkpoint = tmp_path / "whole" / "out" / "checkpoint-4"
    with safe_open(checkpoint / "model.safetensors", "pt") as saved:
        assert set(saved.keys()) == set(model.state_dict())
    resumed, tokenizer = fresh()
    traced_run(resumed, tokenizer, tmp_path / "whole", "aot_eager", resume=str(checkpoint), max_steps=8)
    for (name, value), (_, expected) in zip(resumed.state_dict().items(), model.state_dict().items()):
        torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("compile_flag", [{"torch_compile": True}, {"torch_compile_backend": "aot_eager"}])
def test_activation_checkpointing_is_refused_beside_torch_compile(tmp_path, tiny_model, tiny_tokenizer, compile_flag):
    """Compiled, the checkpointed layers gave gradients up to 3e-4 away from eager's at the first step (aot_eager),
    where every other option matches to the bit: refused, from the flag and from a model that has it on."""
    with pytest.raises(ValueError, match="--torch_compile with --activation_checkpointing: the compiled checkpointed"):
        training_args(tmp_path, activation_checkpointing=True, **compile_flag)
    with pytest.raises(ValueError, match="--torch_compile with --gradient_checkpointing: "):  # its older name
        training_args(tmp_path, gradient_checkpointing=True, **compile_flag)
    training_args(tmp_path, activation_checkpointing=True)  # each alone runs
    args = training_args(tmp_path, **compile_flag)
    tiny_model.activation_checkpointing_enable()  # by hand, on the model
    with pytest.raises(ValueError, match="--torch_compile with the model's activation checkpointing"):
        SentMtlTrainer(model=tiny_model, args=args, processing_class=tiny_tokenizer)
