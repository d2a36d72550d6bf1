"""`SentMtlModel`: a pretrained encoder turned into a two-task sentence transformer.

    encoder ─> pooling ─> shared_projection (hidden → embedding_size) ─> L2 normalise ─> embeddings
                                                      ├─ classification_head ─> logits (Task A, cross-entropy)
                                                      └─ sentiment_head      ─> score logit (Task B, BCE-with-logits)
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_sentmtl import POOLING_MODES, SentMtlConfig


class Pooling(nn.Module):
    """Token states `[batch, seq, hidden]` → one vector per sentence `[batch, hidden]`."""

    def __init__(self, mode: str):
        super().__init__()
        if mode not in POOLING_MODES:
            raise ValueError(f"pooling={mode!r} is not supported; choose one of {', '.join(POOLING_MODES)}.")
        self.mode = mode

    def forward(self, token_states, attention_mask, pooler_output=None):
        if self.mode == "cls":
            return token_states[:, 0]
        if self.mode == "pooler":
            return pooler_output
        # Padding positions must not count, or a sentence's embedding would depend on its batch-mates.
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
        summed = (token_states * mask).sum(dim=1)
        return summed / mask.sum(dim=1).clamp(min=1e-9)


class SentMtlPreTrainedModel(PreTrainedModel):
    config_class = SentMtlConfig
    config: SentMtlConfig
    base_model_prefix = "sentmtl"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # The losses are per-batch means. Left to introspection, the Trainer would see a `**kwargs` forward, assume the
    # model normalises by `num_items_in_batch` itself, and then skip its division by the gradient accumulation steps
    # and multiply by the number of processes: GA× / N× too large a loss.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # The encoder is a `PreTrainedModel` of its own and initialises itself; this covers the heads.
        super()._init_weights(module)
        if isinstance(module, SentMtlModel) and module.loss_log_variances is not None:
            nn.init.zeros_(module.loss_log_variances)  # s_i = 0: both tasks start at weight exp(0) = 1, the plain sum


@dataclass
class SentMtlOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, returned when `labels` or `scores` are given):
        The combined loss: the weighted sum of the task losses given (see `SentMtlConfig.loss_weighting`).
    classification_loss (`torch.FloatTensor` of shape `()`, returned when `labels` is given):
        Task A cross-entropy.
    sentiment_loss (`torch.FloatTensor` of shape `()`, returned when `scores` is given):
        Task B binary cross-entropy, computed from the logit.
    logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
        Task A class logits.
    sentiment_scores (`torch.FloatTensor` of shape `(batch_size,)`):
        Task B score in [0, 1]: `sigmoid(sentiment_logits)`.
    sentiment_logits (`torch.FloatTensor` of shape `(batch_size,)`):
        Task B score before the sigmoid.
    embeddings (`torch.FloatTensor` of shape `(batch_size, embedding_size)`):
        The sentence embeddings (unit norm when `config.normalize`).
    """

    loss: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    sentiment_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    sentiment_scores: torch.FloatTensor | None = None
    sentiment_logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None


class SentMtlModel(SentMtlPreTrainedModel):
    def __init__(self, config: SentMtlConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder_config)
        # One config object for the whole model, so edits to `model.config.encoder_config` reach the encoder.
        config.encoder_config._attn_implementation = self.encoder.config._attn_implementation
        self.encoder.config = config.encoder_config
        if config.pooling == "pooler" and getattr(self.encoder, "pooler", None) is None:
            raise ValueError(
                f"pooling='pooler' needs an encoder with a pooler layer; this {type(self.encoder).__name__} has none: "
                "use 'mean' or 'cls'."
            )
        if config.pooling != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            # An unused pooler would get no gradients: dead weights, and an error under DDP.
            self.encoder.pooler = None
        self.pooling = Pooling(config.pooling)
        self.shared_projection = nn.Linear(config.hidden_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        self.classification_head = nn.Linear(config.embedding_size, config.num_labels)
        self.sentiment_head = nn.Linear(config.embedding_size, 1)
        if config.loss_weighting == "uncertainty":
            self.loss_log_variances = nn.Parameter(torch.zeros(2))
        else:
            self.loss_log_variances = None
        self.post_init()

    @classmethod
    def from_encoder(cls, name_or_path=None, allow_pickle_weights: bool = False, **config_overrides) -> "SentMtlModel":
        """A fresh multi-task model around a pretrained encoder's weights (the heads start untrained).

        With no name, the bundled all-MiniLM-L6-v2 is used (its weights are checked against their sha256 once).
        `config_overrides` are `SentMtlConfig` fields, e.g. `pooling="cls", embedding_size=128`. Weights load from
        safetensors only unless `allow_pickle_weights`.
        """
        from .encoders import (
            DEFAULT_ENCODER_NAME,
            resolve_encoder,
            weights_loading_kwargs,
        )

        path = resolve_encoder(name_or_path)
        encoder = AutoModel.from_pretrained(path, **weights_loading_kwargs(path, allow_pickle_weights))
        config_overrides.setdefault("encoder_name_or_path", str(name_or_path or DEFAULT_ENCODER_NAME))
        config = SentMtlConfig(encoder_config=encoder.config.to_dict(), **config_overrides)
        return cls(config, encoder=encoder)

    # -- how to freeze: the callback decides when ------------------------------------------------------------
    FREEZABLE_PARTS = ("all", "backbone", "classification_head", "sentiment_head")

    def part_modules(self, part: str) -> list[nn.Module]:
        """The modules that make up `part` (one of `FREEZABLE_PARTS`)."""
        parts = {
            "all": [self],
            "backbone": [self.encoder],
            "classification_head": [self.classification_head],
            "sentiment_head": [self.sentiment_head],
        }
        if part not in parts:
            raise ValueError(f"cannot freeze {part!r}; choose one of {', '.join(self.FREEZABLE_PARTS)}.")
        return parts[part]

    def freeze(self, part: str = "backbone") -> None:
        """Stop gradients for `part`: `all`, `backbone`, `classification_head` or `sentiment_head`."""
        for module in self.part_modules(part):
            module.requires_grad_(False)

    def unfreeze(self, part: str = "all") -> None:
        for module in self.part_modules(part):
            module.requires_grad_(True)

    def freeze_lower_backbone(self, num_layers: int) -> None:
        """Freeze the embeddings and the lowest `num_layers` encoder layers; the layers above keep training."""
        layers = self.encoder_layer_modules()
        if not 0 <= num_layers <= len(layers):
            raise ValueError(f"freeze_backbone_layers={num_layers} must be between 0 and the encoder's {len(layers)} layers.")
        embeddings = getattr(self.encoder, "embeddings", None)
        for module in ([embeddings] if embeddings is not None else []) + layers[:num_layers]:
            module.requires_grad_(False)

    def count_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        return sum(p.numel() for p in self.parameters() if p.requires_grad), total

    def encoder_layer_modules(self) -> list[nn.Module]:
        """The encoder's transformer layers, lowest first (empty when the architecture is not recognised)."""
        for path in ("encoder.layer", "layers", "transformer.layer", "layer"):
            module = self.encoder
            for part in path.split("."):
                module = getattr(module, part, None)
                if module is None:
                    break
            if isinstance(module, nn.ModuleList):
                return list(module)
        return []

    def pool(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The encoder's pooled sentence vector `[batch, hidden]`, before the projection."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs)
        return self.pooling(out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None))

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Sentence embeddings `[batch, embedding_size]`: pooled, projected and (by default) L2-normalised."""
        pooled = self.pool(input_ids, attention_mask, token_type_ids)
        # The projection and the normalisation run in fp32 even under bf16 / fp16 autocast: they are ~0.5% of the
        # FLOPs, and rounding the 256 outputs (and their norm) to bf16 alone costs ~0.004 of cosine similarity.
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            embeddings = self.shared_projection(pooled.float())
            return F.normalize(embeddings, p=2, dim=-1) if self.config.normalize else embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        scores: torch.Tensor | None = None,
    ) -> SentMtlOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): Task A class ids.
        scores (`torch.FloatTensor` of shape `(batch_size,)`, *optional*): Task B targets in [0, 1].
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeddings = self.embed(input_ids, attention_mask, token_type_ids)
        features = self.dropout(embeddings)
        logits = self.classification_head(features)
        sentiment_logits = self.sentiment_head(features).squeeze(-1)

        classification_loss = sentiment_loss = loss = None
        if labels is not None:
            classification_loss = F.cross_entropy(
                logits.float(), labels.view(-1), label_smoothing=self.config.classification_label_smoothing
            )
        if scores is not None:
            # From the logit, not the sigmoid: BCE on probabilities saturates to log(0) in low precision.
            sentiment_loss = F.binary_cross_entropy_with_logits(
                sentiment_logits.float(), scores.view(-1).to(torch.float32)
            )
        if classification_loss is not None or sentiment_loss is not None:
            loss = self.combine_losses(classification_loss, sentiment_loss)

        return SentMtlOutput(
            loss=loss,
            classification_loss=classification_loss,
            sentiment_loss=sentiment_loss,
            logits=logits,
            sentiment_scores=torch.sigmoid(sentiment_logits),
            sentiment_logits=sentiment_logits,
            embeddings=embeddings,
        )

    def combine_losses(self, classification_loss, sentiment_loss) -> torch.Tensor:
        """The weighted sum of the task losses that are present."""
        task_losses = (classification_loss, sentiment_loss)
        if self.loss_log_variances is not None:
            # Kendall et al. 2018: exp(-s) = 1/sigma^2 weighs each task; s/2 = log(sigma) stops s from growing
            # without bound (which would switch the task off).
            s = self.loss_log_variances.float()
            terms = [torch.exp(-s[i]) * task + 0.5 * s[i] for i, task in enumerate(task_losses) if task is not None]
        else:
            weights = (self.config.classification_loss_weight, self.config.sentiment_loss_weight)
            terms = [w * task for w, task in zip(weights, task_losses) if task is not None]
        return torch.stack(terms).sum()


def register_auto_classes() -> None:
    """Make `AutoConfig` / `AutoModel` resolve `model_type="sentmtl"` without `trust_remote_code`."""
    AutoConfig.register(SentMtlConfig.model_type, SentMtlConfig, exist_ok=True)
    AutoModel.register(SentMtlConfig, SentMtlModel, exist_ok=True)


# `save_pretrained` writes `auto_map` into config.json and copies this file, configuration_sentmtl.py and
# encoders.py (its relative imports) beside the weights, so `AutoModel.from_pretrained(dir, trust_remote_code=True)`
# works where sentmtl is not installed. The code files stay free of imports outside torch / transformers / stdlib
# (transformers refuses remote code whose imports are missing; optional ones sit in try blocks).
SentMtlConfig.register_for_auto_class()
SentMtlModel.register_for_auto_class("AutoModel")


__all__ = ["Pooling", "SentMtlModel", "SentMtlOutput", "SentMtlPreTrainedModel", "register_auto_classes"]
