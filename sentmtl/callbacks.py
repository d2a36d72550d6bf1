"""`FreezeCallback`: decides *when* parts of the model are frozen; the model's helpers know *how*."""

import logging

from transformers import TrainerCallback

from .trainer import unwrap

logger = logging.getLogger(__name__)


class FreezeCallback(TrainerCallback):
    """Freezes before the optimizer and the DDP wrapper exist, and optionally unfreezes the backbone later.

    Args:
        freeze: `none`, `all`, `backbone`, `classification_head` or `sentiment_head`.
        freeze_backbone_layers: freeze the embeddings and the lowest K encoder layers.
        unfreeze_backbone_at_epoch: at the start of this (0-based) epoch the backbone trains again.
    """

    def __init__(self, freeze="none", freeze_backbone_layers=0, unfreeze_backbone_at_epoch=None):
        self.freeze = freeze
        self.freeze_backbone_layers = freeze_backbone_layers
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch

    @classmethod
    def from_args(cls, args) -> "FreezeCallback":
        return cls(args.freeze, args.freeze_backbone_layers, args.unfreeze_backbone_at_epoch)

    def apply(self, model) -> None:
        """The freezing asked for, applied to `model` now."""
        if self.freeze != "none":
            model.freeze(self.freeze)
        if self.freeze_backbone_layers:
            model.freeze_lower_backbone(self.freeze_backbone_layers)
        trainable, total = model.count_parameters()
        logger.warning(
            "Trainable parameters: %s of %s (%.1f%%); freeze=%s, frozen lower layers=%d",
            f"{trainable:,}", f"{total:,}", 100 * trainable / total, self.freeze, self.freeze_backbone_layers,
        )

    def on_init_end(self, args, state, control, model=None, **kwargs):
        # The Trainer calls this at the end of __init__: before create_optimizer and before accelerate wraps
        # the model in DDP, so every process agrees on which parameters train.
        self.apply(model)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if self.unfreeze_backbone_at_epoch is not None and round(state.epoch) == self.unfreeze_backbone_at_epoch:
            unwrap(model).unfreeze("backbone")
            logger.warning("Epoch %d: backbone unfrozen (%s trainable parameters).",
                           self.unfreeze_backbone_at_epoch, f"{unwrap(model).count_parameters()[0]:,}")
