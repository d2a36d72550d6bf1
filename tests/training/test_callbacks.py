"""sentmtl/training/callbacks.py: freezing and gradual unfreezing, and the weight average."""

import pytest
import torch
from helpers import tokenized_synthetic, training_args
from transformers import TrainerCallback, TrainerControl, TrainerState

from sentmtl.training.callbacks import FreezeCallback
from sentmtl.training.trainer import SentMtlTrainer

PARTS = {
    "backbone": lambda name: name.startswith("encoder."),
    "classification_head": lambda name: name.startswith("classification_head."),
    "sentiment_head": lambda name: name.startswith("sentiment_head."),
}


@pytest.mark.parametrize("freeze", ["backbone", "classification_head", "sentiment_head"])
def test_frozen_weights_stay_bit_identical_and_the_rest_train(freeze, tiny_model, tiny_tokenizer, tmp_path):
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    trainer = SentMtlTrainer(
        model=tiny_model,
        args=training_args(tmp_path, freeze=freeze, learning_rate=1e-3, max_steps=3),
        train_dataset=tokenized_synthetic(tiny_tokenizer),
        processing_class=tiny_tokenizer,
        callbacks=[FreezeCallback(freeze)],
    )
    is_frozen = PARTS[freeze]
    assert all(p.requires_grad != is_frozen(n) for n, p in tiny_model.named_parameters())
    trainer.train()
    for name, p in tiny_model.named_parameters():
        if is_frozen(name):
            assert torch.equal(p, before[name]), name
    changed = [n for n, p in tiny_model.named_parameters() if not is_frozen(n) and not torch.equal(p, before[n])]
    assert "shared_projection.weight" in changed and len(changed) >= 3


def test_freeze_lower_backbone_layers(tiny_model):
    FreezeCallback(freeze_backbone_layers=1).apply(tiny_model)
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("encoder.embeddings.", "encoder.encoder.layer.0.")) for n in trainable)
    assert any(n.startswith("encoder.encoder.layer.1.") for n in trainable)
    with pytest.raises(ValueError, match="freeze_backbone_layers=5 must be between 0 and the encoder's 2 layers"):
        tiny_model.freeze_lower_backbone(5)


def test_gradual_unfreezing_trains_the_backbone_after_the_given_epoch(tiny_model, tiny_tokenizer, tmp_path):
    embeddings = tiny_model.encoder.embeddings.word_embeddings.weight
    args = training_args(
        tmp_path, freeze="backbone", unfreeze_backbone_at_epoch=1, num_train_epochs=2, learning_rate=1e-3
    )
    callback = FreezeCallback.from_args(args)
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_epoch_end(self, *a, **k):
            snapshots.append(embeddings.detach().clone())

    before = embeddings.detach().clone()
    SentMtlTrainer(
        model=tiny_model,
        args=args,
        train_dataset=tokenized_synthetic(tiny_tokenizer),
        processing_class=tiny_tokenizer,
        callbacks=[callback, Snapshot()],
    ).train()
    assert torch.equal(snapshots[0], before)  # epoch 0: frozen
    assert not torch.equal(snapshots[1], before)  # epoch 1: training


def _epoch_begin(callback, model, epoch):
    callback.on_epoch_begin(None, TrainerState(epoch=epoch), TrainerControl(), model=model)


def test_unfreezing_fires_after_a_resume_past_its_epoch_and_not_early(tiny_model):
    """`round(state.epoch) == N` never fired when a run resumed past epoch N (2.5 → the backbone stayed frozen), and
    fired in epoch 0 from fractional epochs that round up (0.6 → 1)."""
    callback = FreezeCallback("backbone", unfreeze_backbone_at_epoch=1)
    callback.apply(tiny_model)
    _epoch_begin(callback, tiny_model, 0.6)  # resumed inside epoch 0
    assert not any(p.requires_grad for p in tiny_model.encoder.parameters())
    _epoch_begin(callback, tiny_model, 2.5)  # resumed inside epoch 2, past the unfreezing
    assert all(p.requires_grad for p in tiny_model.encoder.parameters())


def test_ema_follows_the_warmed_up_decay_and_ends_training_on_the_average():
    from types import SimpleNamespace

    from sentmtl.training.callbacks import WeightAveragingCallback

    model = torch.nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    callback = WeightAveragingCallback(0.9)
    callback.on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)
    expected = 0.0
    for step in range(1, 30):
        model.weight.data.fill_(float(step))  # what an optimizer step would do
        state = SimpleNamespace(global_step=step)
        callback.on_step_end(None, state, None, model=model)
        decay = min(0.9, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * step
    callback.on_train_end(None, state, None, model=model)
    assert model.weight.item() == pytest.approx(expected, rel=1e-6)
    assert 20 < expected < 29  # lags the last weights, as an average should
    with pytest.raises(ValueError, match="must be in"):
        WeightAveragingCallback(1.0)


def test_a_lora_models_average_holds_its_adapters_projection_and_heads_not_the_frozen_encoder(tiny_encoder_dir):
    """A second copy of the base encoder would cost a LoRA run the memory its adapters save (and 440 MB in each
    mpnet checkpoint's ema_weights.pt); an average left without the adapters would undo their training."""
    from types import SimpleNamespace

    import sentmtl
    from sentmtl.model.lora import is_base_weight
    from sentmtl.training.callbacks import WeightAveragingCallback

    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    names = dict(model.named_parameters())
    callback = WeightAveragingCallback(0.5)
    callback.on_train_begin(None, SimpleNamespace(global_step=0), None, model=model)
    assert set(callback.average) == {name for name in names if not is_base_weight(name)}
    assert any("lora_B" in name for name in callback.average)
    assert any(name.startswith("shared_projection.") for name in callback.average)
    assert any(name.startswith("classification_head.") for name in callback.average)
    adapter = next(name for name in callback.average if "lora_B" in name)
    with torch.no_grad():
        names[adapter].fill_(1.0)  # what an optimizer step would do; the average starts at B's zeros
    state = SimpleNamespace(global_step=100)  # past the warm-up: the decay is 0.5
    callback.on_step_end(None, state, None, model=model)
    callback.on_train_end(None, state, None, model=model)
    torch.testing.assert_close(names[adapter], torch.full_like(names[adapter], 0.5))
    assert not any(p.requires_grad for name, p in names.items() if is_base_weight(name))  # why leaving them is exact


def test_a_lora_average_saved_with_the_frozen_encoder_still_resumes(tiny_encoder_dir, tmp_path):
    """An ema_weights.pt of an earlier 0.3 dev version also holds the base weights; one missing a trained weight,
    or holding a key that is no base weight, is another model's and refused."""
    from types import SimpleNamespace

    import sentmtl
    from sentmtl.training.callbacks import WeightAveragingCallback

    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    every = {name: p.detach().float().clone() + 1 for name, p in model.named_parameters()}
    state = SimpleNamespace(global_step=3)
    for stored, accepted in (
        (every, True),
        ({k: v for k, v in every.items() if not k.startswith("shared_projection.")}, False),
        ({**every, "extra.weight": torch.zeros(1)}, False),
    ):
        torch.save(stored, tmp_path / WeightAveragingCallback.FILE)
        callback = WeightAveragingCallback(0.5, resume_from=str(tmp_path))
        if not accepted:
            with pytest.raises(ValueError, match="do not match the model's"):
                callback.on_train_begin(None, state, None, model=model)
            continue
        callback.on_train_begin(None, state, None, model=model)
        adapter = next(name for name in callback.average if "lora_B" in name)
        torch.testing.assert_close(callback.average[adapter], every[adapter])
        assert not any("base_layer" in name for name in callback.average)


@pytest.mark.parametrize("freeze", [{"freeze": "backbone"}, {"unfreeze_backbone_at_epoch": 1}])
def test_freezing_or_unfreezing_the_backbone_of_a_lora_model_is_refused(freeze, tiny_encoder_dir):
    """Unfreezing would train the encoder that the weight average and the adapter folder both leave out."""
    import sentmtl

    model, _ = sentmtl.load_model_and_tokenizer(str(tiny_encoder_dir), embedding_size=16, lora={"r": 4})
    with pytest.raises(ValueError, match="on a model with LoRA adapters"):
        FreezeCallback(**freeze).on_init_end(None, None, None, model=model)
