"""sentmtl/model/checkpointing.py: activation checkpointing for MPNet, whose transformers layers lack the switch —
the same gradients as without it (reentrant or not, full or LoRA, dropout on), fewer saved activations, the same
weights and keys; an encoder that neither transformers nor sentmtl can checkpoint is refused."""

import copy
import pickle

import pytest
import torch
from helpers import SHARING_SENTENCES, encoder_dir, padded_batch
from transformers.models.mpnet.modeling_mpnet import MPNetLayer

import sentmtl
from sentmtl.model.checkpointing import add_checkpointing_switch, can_checkpoint, has_checkpointing_switch

LABELS = {"classification": torch.tensor([1, 0, 1, 0]), "sentiment": torch.tensor([1.0, 0.0, 0.6, 0.2])}


def gradients_and_saved_values(model, inputs):
    """One training step's loss, the gradient of every trainable parameter, and how many values autograd saved for
    backward (what checkpointing trades for recompute)."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    model.train().zero_grad()
    torch.manual_seed(1)  # the same dropout masks in each run
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**inputs, task_labels=LABELS).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, sum(saved)


@pytest.mark.parametrize("lora", [None, {"r": 4, "dropout": 0.1}], ids=["full", "lora"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non_reentrant", "reentrant"])
def test_checkpointed_mpnet_gives_the_same_gradients_and_saves_fewer_activations(tiny_mpnet_dir, lora, reentrant):
    torch.manual_seed(0)  # the tiny MPNet keeps its dropout on: the recompute must replay the same masks
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_mpnet_dir), embedding_size=16, lora=lora)
    inputs = padded_batch(tokenizer, SHARING_SENTENCES[:4])
    loss, grads, saved = gradients_and_saved_values(model, inputs)

    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": reentrant})
    layers = [module for module in model.modules() if isinstance(module, MPNetLayer)]
    assert len(layers) == 2 and all(layer.gradient_checkpointing for layer in layers)
    checkpointed_loss, checkpointed_grads, checkpointed_saved = gradients_and_saved_values(model, inputs)

    torch.testing.assert_close(checkpointed_loss, loss)
    assert checkpointed_grads.keys() == grads.keys()
    if lora is not None:
        # Behind frozen embeddings no layer input needs a gradient: reentrant checkpointing would leave the adapters
        # untrained unless enabling it makes the inputs require one (lora_B starts at zero; its gradient does not).
        lora_b = [name for name in grads if "lora_B" in name]
        assert lora_b and all(checkpointed_grads[name].abs().sum() > 0 for name in lora_b)
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert checkpointed_saved < saved / 2

    model.activation_checkpointing_disable()
    assert not any(layer.gradient_checkpointing for layer in layers)
    # (with LoRA, transformers leaves the embeddings' output requiring a gradient, so a little more is saved)
    assert gradients_and_saved_values(model, inputs)[2] >= saved


def test_the_switch_keeps_the_layers_weights_keys_and_copies(tiny_mpnet_dir):
    torch.manual_seed(0)
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(tiny_mpnet_dir), embedding_size=16)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert not has_checkpointing_switch(model.encoder) and can_checkpoint(model.encoder)
    assert add_checkpointing_switch(model.encoder) == 2
    assert has_checkpointing_switch(model.encoder) and add_checkpointing_switch(model.encoder) == 0
    layer_classes = {type(layer) for layer in model.encoder.encoder.layer}
    assert len(layer_classes) == 1 and issubclass(layer_classes.pop(), MPNetLayer)
    pickle.loads(pickle.dumps(model.encoder))  # a user's torch.save(model) pickles it
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        torch.testing.assert_close(after[key], value)
    # EMA and the tests copy models: the copy keeps the switch and its layers' class.
    model.activation_checkpointing_enable()
    twin = copy.deepcopy(model)
    assert twin.is_activation_checkpointing and type(twin.encoder.encoder.layer[0]) is type(
        model.encoder.encoder.layer[0]
    )
    inputs = padded_batch(tokenizer, SHARING_SENTENCES[:4])
    model.eval(), twin.eval()
    torch.testing.assert_close(twin(**inputs).embeddings, model(**inputs).embeddings)


def test_an_encoder_sentmtl_cannot_checkpoint_is_refused_by_name(tmp_path, tiny_encoder_dir):
    """XLM's layers are not a module list of blocks transformers or sentmtl can switch; nothing is changed."""
    from sentmtl.model.modeling_sentmtl import SentMtlForSequenceClassification

    model, _ = sentmtl.load_model_and_tokenizer(str(encoder_dir(tmp_path, "xlm", tiny_encoder_dir)), embedding_size=16)
    assert not can_checkpoint(model.encoder) and add_checkpointing_switch(model.encoder) == 0
    for view in (model, SentMtlForSequenceClassification(model.config)):
        with pytest.raises(ValueError, match=r"\(XLMModel, model_type xlm\) does not support .* \(MPNetLayer\)"):
            view.activation_checkpointing_enable()
        view.activation_checkpointing_disable()  # nothing to switch off: a no-op, where transformers would raise
        assert not view.is_activation_checkpointing
