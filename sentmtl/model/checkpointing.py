"""Activation checkpointing for encoders whose transformers layers have no switch for it.

transformers checkpoints the modules that carry a `gradient_checkpointing` attribute (its `GradientCheckpointingLayer`
blocks) and refuses a model with none. MPNet's layers (all-mpnet-base-v2, the seed's base-size encoder) have none in
transformers 5.x, yet each is a pure function of its inputs (hidden states, mask and the position bias that the
encoder computes once and hands to every layer) apart from dropout, whose random state `torch.utils.checkpoint`
saves and restores for the recompute. So they are safe to checkpoint, and sentmtl gives them the switch: each layer
is re-classed as a subclass of its own class and of `GradientCheckpointingLayer`, with the same weights and state
dict keys. Then transformers' own enable/disable, `every_n_layers` and checkpointing kwargs work on them unchanged.

Only the layer classes in `CHECKPOINTABLE_LAYERS` are re-classed: a layer that updates state in its forward
(I-BERT's quantisation statistics, for one) would update it twice under recompute, which is a silent wrong result.
"""

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.mpnet.modeling_mpnet import MPNetLayer


class CheckpointableMPNetLayer(MPNetLayer, GradientCheckpointingLayer):
    """`MPNetLayer` with transformers' checkpointing switch. `GradientCheckpointingLayer.__init_subclass__` wraps the
    inherited `forward` to checkpoint it when switched on; off, it is `MPNetLayer.forward`. Defined here, not built on
    the fly, so a model holding it still pickles."""


# Layer classes known to be pure functions of their positional inputs (dropout aside), so a recompute in backward
# gives what the forward gave, each with its switched subclass. Matched by exact type: a subclass may override
# `forward`. Add a class only with the gradient test in tests/model/test_checkpointing.py covering it.
CHECKPOINTABLE_LAYERS = {MPNetLayer: CheckpointableMPNetLayer}


def has_checkpointing_switch(encoder: nn.Module) -> bool:
    """Whether transformers can checkpoint `encoder` as it is: some module of it carries the switch it sets."""
    return any(hasattr(module, "gradient_checkpointing") for module in encoder.modules())


def _checkpointable_layers(encoder: nn.Module) -> list[nn.Module]:
    return [module for module in encoder.modules() if type(module) in CHECKPOINTABLE_LAYERS]


def can_checkpoint(encoder: nn.Module) -> bool:
    """Whether activation checkpointing can run on `encoder`: through transformers' switch, or sentmtl's."""
    return has_checkpointing_switch(encoder) or bool(_checkpointable_layers(encoder))


def add_checkpointing_switch(encoder: nn.Module) -> int:
    """Give the layers of `encoder` that lack it transformers' checkpointing switch (off until transformers' own
    `activation_checkpointing_enable` sets it). Leaves an encoder that already has the switch alone. Returns how
    many layers were given it."""
    if has_checkpointing_switch(encoder):
        return 0
    layers = _checkpointable_layers(encoder)
    for layer in layers:
        layer.__class__ = CHECKPOINTABLE_LAYERS[type(layer)]
    return len(layers)
