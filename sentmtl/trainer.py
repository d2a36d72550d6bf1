"""Layer-wise learning rates as a pure function, and the `Trainer` that uses them."""

import logging

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer_pt_utils import (
    LengthGroupedSampler,
    get_length_grouped_indices,
)

from .metrics import task_metrics
from .sampler import RankBatches, TaskBatchSampler
from .task_data import MultiSourceDataset

logger = logging.getLogger(__name__)


def build_param_groups(model, args) -> list[dict]:
    """AdamW parameter groups: one per (part of the model, weight decay or not), each with its own LR.

    Encoder layer k of L (1-based) gets `backbone LR × decay^(L-k)`; the embeddings get `decay^L`, the lowest;
    the rest of the encoder (e.g. BERT's pooler) the backbone LR. The shared projection and the heads take
    their own LRs, the learned loss weights (`--loss_weighting uncertainty`) theirs. Biases, LayerNorm weights and
    other 1-D parameters get no weight decay. Frozen parameters are left out, except a backbone scheduled to unfreeze (`unfreeze_backbone_at_epoch`), which must already be in
    the optimizer when it starts to receive gradients.
    """
    lrs = args.learning_rates()
    decay = args.layerwise_lr_decay
    layers = model.encoder_layer_modules()
    num_layers = len(layers)
    layer_of = {id(p): k for k, layer in enumerate(layers, start=1) for p in layer.parameters()}
    include_frozen_backbone = getattr(args, "unfreeze_backbone_at_epoch", None) is not None

    named = {}  # group name → (lr, [(param name, param)])
    for name, param in model.named_parameters():
        in_backbone = name.startswith("encoder.")
        if not param.requires_grad and not (in_backbone and include_frozen_backbone):
            continue
        if in_backbone:
            if id(param) in layer_of:
                k = layer_of[id(param)]
                group, lr = f"backbone.layer{k}", lrs["backbone"] * decay ** (num_layers - k)
            elif name.startswith("encoder.embeddings."):
                group, lr = "backbone.embeddings", lrs["backbone"] * decay**num_layers
            else:
                group, lr = "backbone.other", lrs["backbone"]
        elif name.startswith("shared_projection."):
            group, lr = "shared_projection", lrs["shared"]
        elif name == "loss_log_variances":
            group, lr = "loss_weighting", lrs["loss_weighting"]
        else:  # <task>_head: one group for the heads at --head_learning_rate, one per task with its own LR
            task = name.split(".", 1)[0].removesuffix("_head")
            own = (getattr(args, "task_head_learning_rates", None) or {}).get(task)
            group, lr = (f"heads.{task}", own) if own else ("heads", lrs["head"])
        no_decay = param.ndim < 2
        key = f"{group}{'.no_decay' if no_decay else ''}"
        named.setdefault(key, (lr, 0.0 if no_decay else args.weight_decay, []))[2].append(param)
    return [
        {"name": key, "params": params, "lr": lr, "weight_decay": weight_decay}
        for key, (lr, weight_decay, params) in named.items()
    ]


def describe_param_groups(groups: list[dict]) -> str:
    """A small table: group, parameter count, LR, weight decay."""
    lines = [f"{'group':<28}{'params':>12}{'lr':>11}{'wd':>7}"]
    for group in groups:
        count = sum(p.numel() for p in group["params"])
        lines.append(f"{group['name']:<28}{count:>12,}{group['lr']:>11.2e}{group['weight_decay']:>7.3f}")
    return "\n".join(lines)


class SentMtlTrainer(Trainer):
    """A `Trainer` whose optimizer has the layer-wise groups of `build_param_groups`.

    The Trainer's own LR scheduler multiplies every group's LR by the same warmup/decay factor.
    """

    def __init__(self, *args, eval_sources=None, **kwargs):
        """`eval_sources`: `EvalSource`s (a tokenized eval split and the tasks it measures); with them, `evaluate`
        measures every task on its own data. Without them the Trainer's own evaluation runs."""
        super().__init__(*args, **kwargs)
        self.eval_sources = eval_sources
        self.last_eval_outputs = {}
        # The Trainer's label smoother would replace the model's loss with a smoothed Task A loss alone, dropping
        # Task B without a word; the model smooths Task A inside its own loss instead.
        unwrap(self.model).config.set_label_smoothing(self.args.label_smoothing_factor)
        self.label_smoother = None

    def create_optimizer(self, model=None):
        # transformers passes `model` positionally on some paths (e.g. with FSDP / DeepSpeed).
        model = model if model is not None else self.model
        if self.optimizer is None:
            groups = build_param_groups(unwrap(model), self.args)
            if not groups:
                raise ValueError("Nothing to train: every parameter is frozen.")
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            if self.args.should_log:
                logger.warning("Optimizer parameter groups:\n%s", describe_param_groups(groups))
        return self.optimizer

    def get_train_dataloader(self):
        """Batches from one source at a time (`TaskBatchSampler`) when training on `MultiSourceDataset`."""
        if not isinstance(self.train_dataset, MultiSourceDataset):
            return super().get_train_dataloader()
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed  # --data_seed 0 is a seed
        world = self.args.world_size
        # Global batches of W × b rows from one source, each process taking its share: every process trains the
        # same task at the same step.
        sampler = RankBatches(TaskBatchSampler(
            self.train_dataset.lengths(), self._train_batch_size * world, strategy=self.args.task_sampling,
            temperature=self.args.task_sampling_temperature, seed=seed, within=self.args.train_sampling_strategy,
        ), world, self.args.process_index)  # fmt: skip
        loader = DataLoader(self.train_dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)  # fmt: skip
        loader = self.accelerator.prepare(loader)
        # accelerate would shard the already per-process batches again (and drop rows): make its wrapper a
        # passthrough, as transformers does for its own rank-aware batch sampler. It still hands the epoch on
        # (to `RankBatches.sampler`).
        shard = getattr(loader, "batch_sampler", None)
        if shard is not sampler and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Every task on its source's eval split: `<prefix>_<task>_<metric>`, `<prefix>_<task>_loss`, and
        `<prefix>_loss`, the weighted sum of the task losses (what training minimises)."""
        if self.eval_sources is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        metrics, task_losses = {}, {}
        self.last_eval_outputs = {}  # {task: (outputs, targets)} of this evaluation, for the run's plots
        for source in self.eval_sources:
            collected = self._predict_source(model, source)
            for task in source.tasks:
                outputs, targets, loss = collected[task.name]
                self.last_eval_outputs[task.name] = (outputs, targets)
                task_losses[task.name] = loss
                metrics[f"{metric_key_prefix}_{task.name}_loss"] = loss
                values = task_metrics(task, outputs, targets, collected["_domains"])
                metrics.update({f"{metric_key_prefix}_{task.name}_{key}": value for key, value in values.items()})
        weights = {task.name: task.loss_weight for task in model.tasks}
        metrics[f"{metric_key_prefix}_loss"] = float(sum(weights[name] * value for name, value in task_losses.items()))
        model.train(was_training)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @torch.inference_mode()
    def _predict_source(self, model, source) -> dict:
        """{task: (outputs, targets, mean loss)} and `_domains` over one source's eval split, gathered from every
        process."""
        loader = self.accelerator.prepare(DataLoader(source.dataset, batch_size=self.args.eval_batch_size,
                                                     collate_fn=self.data_collator))  # fmt: skip
        parts = {task.name: ([], [], []) for task in source.tasks}
        domains, sizes = [], []
        for batch in loader:
            domain = batch.pop("domain")
            # The run's precision whether or not training wrapped the model's forward (an evaluation-only run
            # never does): the same checkpoint must measure the same.
            with self.accelerator.autocast():
                out = model(**batch)
            domains.append(self.accelerator.gather_for_metrics(domain).cpu())
            sizes.append(len(domains[-1]))
            for task in source.tasks:
                outputs, targets, task_loss = parts[task.name]
                if task.type == "similarity":
                    value = torch.nn.functional.cosine_similarity(out.embeddings, out.pair_embeddings, dim=-1)
                elif task.type == "distillation":
                    value = out.embeddings
                else:
                    value = out.task_logits[task.name]
                target = batch["task_labels"][task.name]
                outputs.append(self.accelerator.gather_for_metrics(value.float()).cpu())
                targets.append(self.accelerator.gather_for_metrics(target).cpu())
                task_loss.append(float(out.task_losses[task.name]))
        result = {"_domains": torch.cat(domains).numpy()}
        for task in source.tasks:
            outputs, targets, task_loss = parts[task.name]
            outputs, targets = torch.cat(outputs).numpy(), torch.cat(targets).numpy()
            if task.type == "distillation":
                outputs = (outputs, targets)
            result[task.name] = (outputs, targets, float(np.average(task_loss, weights=sizes)))
        return result

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy == "group_by_length" and self.args.world_size == 1 and dataset is not None:
            # transformers' sampler draws its order from the global RNG, whose state a checkpoint saves mid-epoch,
            # so a resumed run would see a different order for the rest of that epoch. Seeded by (seed, epoch), the
            # resumed epoch replays the interrupted one and the run ends where an uninterrupted one would.
            lengths = [len(ids) for ids in dataset["input_ids"]]
            batch_size = self.args.train_batch_size * self.args.gradient_accumulation_steps
            seed = self.args.seed if self.args.data_seed is None else self.args.data_seed  # --data_seed 0 is a seed
            return EpochSeededLengthGroupedSampler(batch_size, lengths, seed=seed)
        return super()._get_train_sampler(train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # `sources` / `domain` label rows for per-domain metrics only; the model does not take them.
        inputs = {key: value for key, value in inputs.items() if key not in ("sources", "domain")}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        # A NaN / inf loss poisons every weight at the next optimizer step, silently: stop before that step, so
        # the model in memory and every checkpoint on disk are still good ones. Checked after the backward pass,
        # where the Trainer reads the loss anyway (its NaN filter): checking between forward and backward would
        # stall a GPU at every step while the CPU waits to queue the backward kernels.
        if not all_processes_agree(torch.isfinite(loss).all()):
            raise NonFiniteLossError(
                f"training stopped at step {self.state.global_step + 1} of {self.state.max_steps} "
                f"(epoch {self.state.epoch or 0:.2f}): the loss is {loss.float().item()}. No update was applied "
                "with it. Lower the learning rates, or use --bf16 instead of --fp16."
            )
        return loss


class EvalSource:
    """One source's tokenized eval split and the tasks measured on it."""

    def __init__(self, dataset, tasks):
        self.dataset, self.tasks = dataset, tasks


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Batches of similar length (little padding), in an order that depends only on (seed, epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch) -> None:  # the Trainer calls this at the start of every epoch, resumed ones included
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def all_processes_agree(flag: torch.Tensor | bool, device=None) -> bool:
    """`flag` (a boolean, or a boolean scalar tensor) on this process AND on every other one. Under several processes
    each must take the same decision at the same step, or the ones that go on wait forever for the ones that
    stopped. In one process this is `bool(flag)`: no tensor is made for a plain bool."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = torch.as_tensor(flag, device=device if not isinstance(flag, torch.Tensor) else flag.device)
        flag = flag.to(torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; raised before the optimizer step that would apply it."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP / compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model
