"""Activation checkpointing for encoders whose transformers layers have no switch for it.

transformers checkpoints the modules that carry a `gradient_checkpointing` attribute (its `GradientCheckpointingLayer`
blocks) and refuses a model with none. MPNet's layers (all-mpnet-base-v2, the seed's base-size encoder) have none in
transformers 5.x, yet each is a pure function of its inputs (hidden states, mask and the position bias that the
encoder computes once and hands to every layer) apart from dropout, whose random state `torch.utils.checkpoint`
saves and restores for the recompute. So they are safe to checkpoint, and sentmtl gives them the switch: each layer
is re-classed as a subclass of its own class and of `GradientCheckpointingLayer`, with the same weights and state
dict keys. Then transformers' own enable/disable, `every_n_layers` and checkpointing kwargs work on them unchanged.

Only the layer classes listed in `CHECKPOINTABLE_LAYERS` are re-classed: a layer that updates state in its forward
(I-BERT's quantisation statistics, for one) would update it twice under recompute, which is a silent wrong result.
"""

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

# Layer classes, by name, known to be pure functions of their positional inputs (dropout aside), so a recompute in
# backward gives what the forward gave. Add a class here only after the gradient test in tests/model covers it.
CHECKPOINTABLE_LAYERS = ("MPNetLayer",)

_subclasses: dict[type, type] = {}


def has_checkpointing_switch(encoder: nn.Module) -> bool:
    """Whether transformers can checkpoint `encoder` as it is: some module of it carries the switch it sets."""
    return any(hasattr(module, "gradient_checkpointing") for module in encoder.modules())


def _checkpointable_layers(encoder: nn.Module) -> list[nn.Module]:
    return [module for module in encoder.modules() if type(module).__name__ in CHECKPOINTABLE_LAYERS]


def can_checkpoint(encoder: nn.Module) -> bool:
    """Whether activation checkpointing can run on `encoder`: through transformers' switch, or sentmtl's."""
    return has_checkpointing_switch(encoder) or bool(_checkpointable_layers(encoder))


def _with_switch(layer_class: type) -> type:
    # One subclass per layer class, so every layer of an encoder (and of its copies: EMA, deepcopy) shares it.
    # `GradientCheckpointingLayer.__init_subclass__` wraps the inherited `forward` to checkpoint it when switched on.
    if layer_class not in _subclasses:
        _subclasses[layer_class] = type(
            f"Checkpointable{layer_class.__name__}",
            (layer_class, GradientCheckpointingLayer),
            {"__module__": __name__, "__doc__": f"{layer_class.__name__} with transformers' checkpointing switch."},
        )
    return _subclasses[layer_class]


def add_checkpointing_switch(encoder: nn.Module) -> int:
    """Give the layers of `encoder` that lack it transformers' checkpointing switch (off until transformers' own
    `activation_checkpointing_enable` sets it). Leaves an encoder that already has the switch alone. Returns how
    many layers were given it."""
    if has_checkpointing_switch(encoder):
        return 0
    layers = _checkpointable_layers(encoder)
    for layer in layers:
        layer.__class__ = _with_switch(type(layer))
    return len(layers)
