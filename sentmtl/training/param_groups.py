"""Optimizer parameter groups, as pure functions: the model's parts (`model.parameter_groups()`) with their layer-wise
learning rates and weight decay (`build_param_groups`), merged to one group per distinct (LR, weight decay)
(`merge_param_groups`), the table the run logs (`describe_param_groups`), and the check that a resumed checkpoint's
groups are this run's (`check_resumed_groups`). `SentMtlTrainer` builds its optimizer with them."""


def build_param_groups(model, args, head_learning_rates: dict[str, float] | None = None) -> list[dict]:
    """AdamW parameter groups from the model's own parts (`model.parameter_groups()`), each with its LR.

    Encoder part at depth d below the top layer gets `backbone LR × decay^d` (layer k of L: d = L − k; the
    embeddings: d = L, the lowest). The shared projection, the heads and the learned loss weights take their own LRs;
    `head_learning_rates` gives a task's head its own (its own group), the other heads share one. Biases, LayerNorm
    weights and other 1-D parameters get no weight decay. Frozen parameters are left out, except a backbone
    scheduled to unfreeze (`unfreeze_backbone_at_epoch`), which must already be in the optimizer when it starts to
    receive gradients.
    """
    lrs = args.learning_rates()
    parts = model.parameter_groups()
    own = {task: lr for task, lr in (head_learning_rates or {}).items() if lr is not None}
    unknown = sorted(set(own) - {part.task for part in parts if part.role == "head"})
    if unknown:
        raise ValueError(f"head learning rates for {unknown}, which have no head in this model.")
    include_frozen_backbone = getattr(args, "unfreeze_backbone_at_epoch", None) is not None
    by_role = {
        "backbone": lrs["backbone"],
        "projection": lrs["shared"],
        "loss_weighting": lrs["loss_weighting"],
        "head": lrs["head"],
    }
    named = {}  # group name → (lr, weight decay, params)
    for part in parts:
        if part.role == "backbone":
            name, lr = part.name, lrs["backbone"] * args.layerwise_lr_decay**part.depth
        elif part.role == "head":
            name, lr = (part.name, own[part.task]) if part.task in own else ("heads", lrs["head"])
        else:
            name, lr = part.name, by_role[part.role]
        for _, param in part.params:
            if not param.requires_grad and not (part.role == "backbone" and include_frozen_backbone):
                continue
            no_decay = param.ndim < 2
            key = f"{name}{'.no_decay' if no_decay else ''}"
            named.setdefault(key, (lr, 0.0 if no_decay else args.weight_decay, []))[2].append(param)
    return [
        {"name": key, "params": params, "lr": lr, "weight_decay": weight_decay}
        for key, (lr, weight_decay, params) in named.items()
    ]


def merge_param_groups(groups: list[dict]) -> list[dict]:
    """One optimizer group per distinct (LR, weight decay), in first-appearance order: at the default
    `layerwise_lr_decay=1.0` the ~18 groups of `build_param_groups` hold 2–4 distinct pairs, and each group costs the
    optimizer its own kernel launches every step. AdamW treats every parameter alike within a group, so the updates
    are the same (tested: the same loss curve). A merged group is named after its first member and keeps the
    members' names in `members` (a resumed run checks them)."""
    merged: dict[tuple, dict] = {}
    for group in groups:
        key = (group["lr"], group["weight_decay"])
        if key not in merged:
            merged[key] = {**group, "params": list(group["params"]), "members": [group["name"]]}
        else:
            merged[key]["params"] += group["params"]
            merged[key]["members"].append(group["name"])
    for group in merged.values():
        if len(group["members"]) > 1:
            group["name"] = f"{group['members'][0]} (+{len(group['members']) - 1})"
    return list(merged.values())


def describe_param_groups(groups: list[dict], lora: str | None = None) -> str:
    """A small table: group, parameter count, LR, weight decay; `lora` (`lora.describe_lora`) heads it in a LoRA run,
    whose backbone groups hold the adapters (an adapter takes the LR of its encoder layer)."""
    lines = [f"{lora}; the backbone groups are the adapters"] if lora else []
    lines += [f"{'group':<28}{'params':>12}{'lr':>11}{'wd':>7}"]
    for group in groups:
        count = sum(p.numel() for p in group["params"])
        lines.append(f"{group['name']:<28}{count:>12,}{group['lr']:>11.2e}{group['weight_decay']:>7.3f}")
    return "\n".join(lines)


def check_resumed_groups(checkpoint, saved: list[dict], groups: list[dict]) -> None:
    """Resuming: the checkpoint's optimizer groups (`saved`, with their names and `members`) must be the ones this run
    builds (`groups`), in order; loading another layout would pair the wrong parameters with the wrong moments,
    silently."""
    if saved and "members" not in saved[0]:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint}: its optimizer predates merged parameter "
            "groups (sentmtl 0.2.x and earlier: one group per layer), so its moments cannot be "
            "matched to this version's groups. Resume with the version that wrote it, or start "
            "from its weights with --model_name_or_path."
        )
    names = [(group.get("name"), group.get("members")) for group in saved]
    mine = [(group.get("name"), group.get("members")) for group in groups]
    if names != mine:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint}: its optimizer has the parameter groups "
            f"{names}, this run builds {mine} (another version of sentmtl, other head LRs or "
            "freezing). Resume with the same settings and version, or start from its weights "
            "with --model_name_or_path instead."
        )
