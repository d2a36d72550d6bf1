"""The parts of `SentMtlModel` (blocks first, as in transformers' modeling files): pooling, a task head, and what the
model knows about its own parts — which can be frozen, how they group for the optimizer, merging LoRA adapters.

Copied beside saved weights with modeling_sentmtl.py: torch and the standard library only.
"""

from dataclasses import dataclass

import torch
from torch import nn

from .configuration_sentmtl import POOLING_MODES
from .lora import merge_lora
from .losses import outside_autocast


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
        # Padding positions must not count, or a sentence's embedding would depend on its batch-mates. Each row's
        # weights (1 / its token count on its tokens, 0 on padding) times its token states, as one batched matrix
        # product: two kernels fewer a training step than summing the masked states and dividing (the product and
        # the sum are one kernel; its backward is one product, not a product and a multiplication).
        if token_states.dtype in (torch.float16, torch.bfloat16):
            # An encoder run with half-precision weights (not autocast, whose layer norms give fp32 states): the
            # mean in fp32, as 1 / token count rounded to bf16 is up to 2^-9 off.
            token_states = token_states.float()
        mask = attention_mask.unsqueeze(1).to(token_states.dtype)  # [batch, 1, seq]
        weights = mask / mask.sum(dim=-1, keepdim=True).clamp(min=1e-9)
        # Outside autocast, which would round the product to half precision: under it the encoder's last layer norm
        # gives float32 states, and the sum and division this replaced stayed in float32.
        with outside_autocast(token_states.device.type):
            return torch.bmm(weights, token_states).squeeze(1)


class TaskHead(nn.Linear):
    """A task's head: a linear layer on the embedding, its output times a learnable logit scale when the config
    has one (`head_logit_scale`). A `Linear` subclass, so checkpoints keep the keys `<task>_head.weight` / `.bias`."""

    def __init__(self, in_features: int, out_features: int, logit_scale: float | None):
        super().__init__(in_features, out_features)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale))) if logit_scale is not None else None

    def forward(self, features):
        out = super().forward(features)
        return out * self.logit_scale if self.logit_scale is not None else out


@dataclass
class ParameterGroup:
    """A part of the model for the optimizer: `role` is backbone, projection, head or loss_weighting; `depth` is an
    encoder part's distance below the top layer (for layer-wise LR decay); `task` names a head's task."""

    name: str
    role: str
    params: list  # (name, parameter) pairs
    depth: int = 0
    task: str | None = None


class ModelParts:
    """Mixed into `SentMtlModel`: the model knows *how* to freeze its parts and hands out its parameter groups; the
    callback decides *when*, the trainer turns groups into optimizer groups."""

    def embed_negatives(self, input_ids, attention_mask=None, token_type_ids=None):
        """`[batch, k, embedding_size]`: the embeddings of k hard negatives per row (`[batch, k, length]` inputs), or
        None without them."""
        if input_ids is None:
            return None
        rows, k = input_ids.shape[:2]
        flat = lambda x: None if x is None else x.reshape(rows * k, -1)  # noqa: E731
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        return self.embed(flat(input_ids), flat(mask), flat(token_type_ids)).reshape(rows, k, -1)

    @property
    def freezable_parts(self) -> tuple[str, ...]:
        """`all`, `backbone` and one `<task>_head` per headed task."""
        return ("all", "backbone", *(f"{task.name}_head" for task in self.tasks if task.has_head))

    def part_modules(self, part: str) -> list[nn.Module]:
        """The modules that make up `part` (one of `freezable_parts`)."""
        if part not in self.freezable_parts:
            raise ValueError(f"cannot freeze {part!r}; choose one of {', '.join(self.freezable_parts)}.")
        return {"all": [self], "backbone": [self.encoder]}.get(part) or [getattr(self, part)]

    def freeze(self, part: str = "backbone") -> None:
        """Stop gradients for `part`: `all`, `backbone` or a `<task>_head`."""
        for module in self.part_modules(part):
            module.requires_grad_(False)

    def unfreeze(self, part: str = "all") -> None:
        for module in self.part_modules(part):
            module.requires_grad_(True)

    def freeze_lower_backbone(self, num_layers: int) -> None:
        """Freeze the embeddings and the lowest `num_layers` encoder layers; the layers above keep training."""
        layers = self.encoder_layer_modules()
        if not 0 <= num_layers <= len(layers):
            raise ValueError(
                f"freeze_backbone_layers={num_layers} must be between 0 and the encoder's {len(layers)} layers."
            )
        embeddings = getattr(self.encoder, "embeddings", None)
        for module in ([embeddings] if embeddings is not None else []) + layers[:num_layers]:
            module.requires_grad_(False)

    def merge_lora(self) -> None:
        """Fold LoRA adapters into the encoder's weights, in place (a no-op without them): a plain sentmtl model."""
        merge_lora(self)

    def parameter_groups(self) -> list["ParameterGroup"]:
        """The model's parts for the optimizer, each with its role: the embeddings and each encoder layer (with its
        depth below the top, for layer-wise LR decay), the rest of the encoder, `shared_projection`, one group per
        head, and the learned loss weights. Every parameter is in exactly one group; the trainer turns them into
        optimizer groups with its LR rules (`sentmtl.training.trainer.build_param_groups`)."""
        layers = self.encoder_layer_modules()
        layer_of = {id(p): k for k, layer in enumerate(layers, start=1) for p in layer.parameters()}
        embeddings = getattr(self.encoder, "embeddings", None)
        embedding_ids = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
        heads = {f"{task.name}_head": task.name for task in self.tasks if task.has_head}
        groups: dict[str, ParameterGroup] = {}
        for name, param in self.named_parameters():
            if name.startswith("encoder."):
                if id(param) in layer_of:
                    k = layer_of[id(param)]
                    key, role, depth = f"backbone.layer{k}", "backbone", len(layers) - k
                elif id(param) in embedding_ids:
                    key, role, depth = "backbone.embeddings", "backbone", len(layers)
                else:
                    key, role, depth = "backbone.other", "backbone", 0
                task = None
            elif name.startswith("shared_projection."):
                key, role, depth, task = "shared_projection", "projection", 0, None
            elif name == "loss_log_variances":
                key, role, depth, task = "loss_weighting", "loss_weighting", 0, None
            else:
                module = name.split(".", 1)[0]
                if module not in heads:
                    raise ValueError(f"parameter {name!r} belongs to no part of the model; extend parameter_groups().")
                key, role, depth, task = f"heads.{heads[module]}", "head", 0, heads[module]
            groups.setdefault(key, ParameterGroup(key, role, [], depth, task)).params.append((name, param))
        return list(groups.values())

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


__all__ = ["ModelParts", "ParameterGroup", "Pooling", "TaskHead"]
