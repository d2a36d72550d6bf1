"""sentmtl/training/compiling.py: `--torch_compile` compiles one graph for length-grouped batches of every length, its
steps match the eager ones with each option it allows, its checkpoints have the plain keys and resume, and gradient
activation checkpointing beside it is refused. Backend `aot_eager` here (dynamo and AOT autograd, the parts that decide what is
computed, without inductor's code generation: seconds, and equal to eager to the bit); inductor against eager over 50
steps, a prompted two-source run and two processes: tests/e2e/test_compiled_runs.py."""

import random

import datasets
import numpy as np
import pytest
import torch
from accelerate.utils import TorchDynamoPlugin
from helpers import NEGATIVE_WORDS, POSITIVE_WORDS, TOPICS, training_args
from safetensors import safe_open
from torch._dynamo.utils import counters
from transformers import TrainerCallback

import sentmtl
from sentmtl.data.batching import MultiTaskCollator, prepare
from sentmtl.training.callbacks import FreezeCallback, WeightAveragingCallback
from sentmtl.training.compiling import with_dynamic_shapes
from sentmtl.training.trainer import SentMtlTrainer


def varied_table(model, tokenizer, n=48, seed=0):
    """Labelled sentences of 6 to 30 tokens, so length-grouped batches have many lengths."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    sentences = [
        f"the {rng.choice(TOPICS)} was {'very ' * rng.randrange(25)}"
        f"{rng.choice(POSITIVE_WORDS if label else NEGATIVE_WORDS)} ."
        for label in labels
    ]
    table = datasets.Dataset.from_dict({"sentence": sentences, "label": labels, "score": [float(x) for x in labels]})
    return prepare(table, model.tasks, tokenizer, max_length=64)


def without_dropout(model):
    """Dropout off everywhere (the encoder's too): compiled dropout draws other random numbers than eager dropout."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


class Recorder(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in logs:
            self.losses.append(logs["loss"])


def train(model, tokenizer, out, compiled, callbacks=(), resume=None, **overrides):
    """(per-step losses, the batches' input_ids in order, graphs compiled, the trainer) of a run on `varied_table`."""
    torch._dynamo.reset()  # a graph compiled by an earlier run in this process is not reused
    counters.clear()
    collator = MultiTaskCollator(tokenizer, model.tasks)
    batches = []

    def collate(rows):
        batch = collator(rows)
        batches.append(batch["input_ids"].tolist())
        return batch

    values = dict(max_steps=12, learning_rate=1e-3, warmup_steps=0, report_to=[], save_strategy="no")
    if compiled:
        values.update(torch_compile=True, torch_compile_backend="aot_eager")
    args = training_args(out, **{**values, **overrides})
    recorder = Recorder()
    trainer = SentMtlTrainer(
        model=model,
        args=args,
        train_dataset=varied_table(model, tokenizer),
        processing_class=tokenizer,
        data_collator=collate,
        callbacks=[recorder, *(make(args) for make in callbacks)],
    )
    trainer.train(resume_from_checkpoint=resume)
    return np.array(recorder.losses), batches, counters["stats"]["unique_graphs"], trainer


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
                *train(without_dropout(model), tokenizer, tmp_path / str(compiled), compiled, callbacks, **overrides),
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


def test_compiled_checkpoints_have_plain_keys_and_resume(tiny_encoder_dir, tmp_path):
    """The Trainer saves the model under the compiled wrapper (no `_orig_mod.` prefix), and a compiled run resumed
    from its checkpoint ends on the weights of the run that was not interrupted."""

    def fresh():
        torch.manual_seed(0)
        model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16)
        return without_dropout(model), tokenizer

    model, tokenizer = fresh()
    train(model, tokenizer, tmp_path / "whole", True, max_steps=8, save_strategy="steps", save_steps=4)
    checkpoint = tmp_path / "whole" / "out" / "checkpoint-4"
    with safe_open(checkpoint / "model.safetensors", "pt") as saved:
        assert set(saved.keys()) == set(model.state_dict())
    resumed, tokenizer = fresh()
    train(resumed, tokenizer, tmp_path / "whole", True, resume=str(checkpoint), max_steps=8)
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
