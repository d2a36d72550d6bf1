"""`SentMtlTrainer`: the `Trainer` that trains every task (optimizer groups from `param_groups`, batches one source at
a time, a stream resumed exactly, a non-finite loss stopped) and evaluates every task on its own data. The parameter
group functions, `stream_position` (`checkpoints`), `unwrap` and `all_processes_agree` (`processes`) are importable
from here too."""

import logging
import math
import os
import time

import datasets
import numpy as np
import torch
import transformers
from torch.utils.data import DataLoader
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME

from ..data.batching import MultiSourceDataset, MultiTaskCollator
from ..data.sampler import RankBatches, TaskBatchSampler
from ..model.lora import describe_lora, has_lora
from ..model.task_types import TaskInputs
from ..tasks.io import task_io
from .checkpoints import check_adapter_load, check_resumed_adapters, stream_position
from .compiling import check_compile, compiles, drop_untrained_head_gradients, with_dynamic_shapes
from .param_groups import build_param_groups, check_resumed_groups, describe_param_groups, merge_param_groups
from .processes import all_processes_agree, unwrap

logger = logging.getLogger(__name__)


class SentMtlTrainer(Trainer):
    """A `Trainer` whose optimizer has the layer-wise groups of `build_param_groups`, whose batches each come from
    one source, and whose `evaluate` measures every task on its own data.

    `train_dataset` / `eval_dataset`: a `MultiSourceDataset` (what `run_mtl.py` builds) or one tokenised table with
    `target__<task>` columns (`sentmtl.data.batching.prepare`). `head_learning_rates`: {task: LR} for heads with their own.
    The data collator defaults to `MultiTaskCollator` over the model's tasks (and `eval_tasks`, tasks measured but not
    trained, such as STS-B dev).
    """

    def __init__(self, *args, head_learning_rates: dict[str, float] | None = None, eval_tasks=(), **kwargs):
        model = kwargs.get("model") or (args[0] if args else None)
        headed = [task.name for task in eval_tasks if task.has_head]
        if headed:
            raise ValueError(
                f"eval_tasks {headed} have heads, which only a model's own tasks have; evaluate tasks of "
                "the model, or head-less ones (similarity, distillation)."
            )
        if kwargs.get("data_collator") is None:
            if kwargs.get("processing_class") is None:
                raise ValueError(
                    "SentMtlTrainer needs processing_class=tokenizer (for its MultiTaskCollator) or "
                    "data_collator=MultiTaskCollator(tokenizer, tasks)."
                )
            kwargs["data_collator"] = MultiTaskCollator(kwargs["processing_class"], [*unwrap(model).tasks, *eval_tasks])
        super().__init__(*args, **kwargs)
        check_compile(self.args, unwrap(self.model))
        self.head_learning_rates = dict(head_learning_rates or {})
        self.eval_tasks = list(eval_tasks)
        # Each classification task smooths its own labels (its `label_smoothing`) inside the model's loss; the
        # Trainer's label smoother would replace the whole multi-task loss with one task's.
        smoothing = self.args.label_smoothing_factor
        tasks = unwrap(self.model).tasks
        if smoothing and any(t.kind.label_smoothing and t.label_smoothing != smoothing for t in tasks):
            raise ValueError(
                f"--label_smoothing_factor {smoothing}: each task carries its own label_smoothing "
                f"({ {t.name: t.label_smoothing for t in tasks if t.kind.label_smoothing} }); set it "
                "on the tasks."
            )
        self.label_smoother = None

    def _build_accelerator_args(self, **kwargs):
        # --torch_compile: accelerate compiles the model when it prepares it, with the shapes `compiling` chooses.
        return with_dynamic_shapes(super()._build_accelerator_args(**kwargs))

    def create_optimizer(self, model=None):
        # transformers passes `model` positionally on some paths (e.g. with FSDP / DeepSpeed).
        model = model if model is not None else self.model
        if self.optimizer is None:
            groups = merge_param_groups(build_param_groups(unwrap(model), self.args, self.head_learning_rates))
            if not groups:
                raise ValueError("Nothing to train: every parameter is frozen.")
            optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            if self.args.should_log:
                lora = describe_lora(unwrap(model))
                logger.warning("Optimizer parameter groups:\n%s", describe_param_groups(groups, lora))
        return self.optimizer

    def _load_optimizer_and_scheduler(self, checkpoint):
        """Resuming: the checkpoint's optimizer must have the groups this run builds, in order (their names are saved
        with them); loading another layout would pair the wrong parameters with the wrong moments, silently. A stream
        stopped after its first pass resumes through `_init_training_state`, which an older transformers lacks."""
        if (
            not hasattr(Trainer, "_init_training_state")
            and self._resumes_stream(checkpoint)
            and stream_position(checkpoint, self.args.gradient_accumulation_steps)[0]
        ):
            raise ValueError(
                f"--resume_from_checkpoint {checkpoint}: it stopped after the stream's first pass, and transformers "
                f"{transformers.__version__} counts a resumed stream's steps from its first pass (it has no "
                "Trainer._init_training_state for sentmtl to correct that), which would train a different model. "
                "Upgrade transformers to resume it."
            )
        path = os.path.join(checkpoint, "optimizer.pt") if checkpoint else None
        if path and os.path.isfile(path) and self.optimizer is not None:
            saved = torch.load(path, map_location="cpu", weights_only=True)["param_groups"]
            check_resumed_groups(checkpoint, saved, self.optimizer.param_groups)
        return super()._load_optimizer_and_scheduler(checkpoint)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        check_resumed_adapters(resume_from_checkpoint, unwrap(model if model is not None else self.model))
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _issue_warnings_after_load(self, load_result):
        # A LoRA checkpoint holds every weight but the frozen encoder's, which the run loaded from the same base.
        if has_lora(unwrap(self.model)):
            return check_adapter_load(load_result)
        return super()._issue_warnings_after_load(load_result)

    def _init_training_state(
        self, max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
    ) -> tuple[int, int]:
        """(epochs to pass over, batches to skip in the next) for a resumed run. A stream's epochs are its passes,
        each counted by the Trainer as `max_steps` steps long (its length is not known), so the Trainer would take a
        checkpoint in a later pass to be in the first: it would skip that many batches of the first pass (all of
        it, and short), then retrain the later pass from its start. A stream resumes in the checkpoint's pass
        instead, reshuffled as that pass was (`set_epoch`), past the batches it trained there."""
        epochs_trained, skipped = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if self._resumes_stream(resume_from_checkpoint):
            passes, batches = stream_position(resume_from_checkpoint, self.args.gradient_accumulation_steps)
            if passes:  # within the first pass the Trainer's own count is already the stream's
                epochs_trained, skipped = passes, 0 if self.args.ignore_data_skip else batches
        return epochs_trained, skipped

    def _resumes_stream(self, checkpoint) -> bool:
        return (
            isinstance(self.train_dataset, datasets.IterableDataset)
            and checkpoint is not None
            and os.path.isfile(os.path.join(checkpoint, TRAINER_STATE_NAME))
        )

    def get_train_dataloader(self):
        """Batches from one source at a time (`TaskBatchSampler`); every process takes its share of the same global
        batch, so all train the same source at the same step."""
        if isinstance(self.train_dataset, datasets.IterableDataset):
            # A stream (one source, one process: `run_checks.check_streaming`): batches in the stream's (shuffled) order.
            # A resumed run reads the stream again from the start of the checkpoint's pass and skips the batches
            # already trained on in it: each pass's order is the same every time (seeded by seed and pass, the
            # Trainer's epoch), so it continues at the exact row (`_init_training_state`).
            if self.args.world_size > 1:
                raise ValueError(
                    f"a streamed train_dataset (IterableDataset) trains in one process; "
                    f"{self.args.world_size} were started. Give a table (Dataset) to train under DDP."
                )
            self.train_dataset.set_epoch(0)
            loader = DataLoader(
                self.train_dataset,
                batch_size=self._train_batch_size,
                collate_fn=WithoutDomain(self.data_collator),
                pin_memory=self.args.dataloader_pin_memory,
                drop_last=self.args.dataloader_drop_last,
            )
            return self.accelerator.prepare(loader)
        dataset = MultiSourceDataset.wrap(self.train_dataset)
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed  # --data_seed 0 is a seed
        world = self.args.world_size
        # A source's own batch size is per device, as --per_device_train_batch_size is: the global batch is W times it.
        per_device = lambda size: size * max(1, self.args.n_gpu)  # noqa: E731 (DataParallel: one process, n GPUs)
        sizes = [(per_device(size) if size else self._train_batch_size) * world for size in dataset.batch_sizes]
        sampler = RankBatches(
            TaskBatchSampler(
                dataset.lengths(),
                sizes,
                strategy=self.args.task_sampling,
                temperature=self.args.task_sampling_temperature,
                seed=seed,
                within=self.args.train_sampling_strategy,
                min_batch_size=world,
                batches_per_epoch=dataset.batches_per_epoch,
                keys=dataset.batch_keys(unwrap(self.model).tasks),
            ),
            world,
            self.args.process_index,
        )
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=WithoutDomain(self.data_collator),
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        loader = self.accelerator.prepare(loader)
        # accelerate would shard the already per-process batches again (and drop rows): make its wrapper a
        # passthrough, as transformers does for its own rank-aware batch sampler. It still hands the epoch on
        # (to `RankBatches.sampler`).
        shard = getattr(loader, "batch_sampler", None)
        if shard is not sampler and getattr(shard, "batch_sampler", None) is sampler:
            shard.num_processes, shard.process_index = 1, 0
        return loader

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Every task on its source's rows of `eval_dataset` (default: the run's eval split): `<prefix>_<task>_<metric>`,
        `<prefix>_<task>_loss` over the same rows as the metrics, and `<prefix>_loss`, the model's training
        objective over those task losses (learned loss weights included; eval-only tasks excluded)."""
        return self.evaluate_outputs(eval_dataset, metric_key_prefix)[0]

    def evaluate_outputs(self, eval_dataset=None, metric_key_prefix: str = "eval") -> tuple[dict, dict]:
        """`evaluate`, and each task's `(outputs, targets)` over the rows its metrics were computed from (what the
        run's plots are drawn from)."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            raise ValueError(
                "evaluate() needs an eval_dataset (here or when the trainer is built): a tokenised table "
                "with target__<task> columns (sentmtl.data.batching.prepare) or a MultiSourceDataset."
            )
        dataset = MultiSourceDataset.wrap(dataset)
        model = unwrap(self.model)
        started = time.perf_counter()
        was_training = model.training
        model.eval()
        known = [*model.tasks, *self.eval_tasks]
        metrics, task_losses, labelled, seen = {}, {}, {}, set()
        task_outputs = {}
        for k, part in enumerate(dataset.parts):
            tasks = dataset.part_tasks(k, known)
            twice = sorted(seen & {task.name for task in tasks})
            if twice:
                raise ValueError(
                    f"evaluation data: tasks {twice} have targets in more than one part; give each task "
                    "one evaluation table (concatenate them)."
                )
            seen |= {task.name for task in tasks}
            collected, domains = self._predict(model, part, tasks)
            for task in tasks:
                outputs, targets, loss, count = collected[task.name]
                task_outputs[task.name] = (outputs, targets)
                task_losses[task.name], labelled[task.name] = loss, count > 0
                metrics[f"{metric_key_prefix}_{task.name}_loss"] = float(loss)
                metrics[f"{metric_key_prefix}_{task.name}_rows"] = int(count)  # what its metrics were computed over
                values = task_io(task).metrics(task, outputs, targets, domains, dataset.domain_names[k])
                metrics.update({f"{metric_key_prefix}_{task.name}_{key}": value for key, value in values.items()})
        trained = {
            name: loss.to(model.device) for name, loss in task_losses.items() if name in {t.name for t in model.tasks}
        }
        if trained:
            with torch.no_grad():
                metrics[f"{metric_key_prefix}_loss"] = float(model.combine_losses(trained, labelled=labelled))
        model.train(was_training)
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - started, 4)  # as the Trainer's own
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics, task_outputs

    @torch.inference_mode()
    def _predict(self, model, part, tasks) -> tuple[dict, np.ndarray]:
        """{task: (outputs, targets, loss, labelled rows)} over one source's rows, gathered from every process, and
        the rows' domains. A loss that compares rows is the mean of its batches' (weighted by their labelled rows),
        as in training; any other is computed once over all the rows that carry a target, what the metrics see."""
        loader = self.accelerator.prepare(
            DataLoader(part, batch_size=self.args.eval_batch_size, collate_fn=self.data_collator)
        )
        parts = {task.name: ([], [], [], []) for task in tasks}  # outputs, targets, batch losses, batch sizes
        domains = []
        for batch in loader:
            domains.append(self.accelerator.gather_for_metrics(batch.pop("domain")).cpu())
            targets = batch.pop("task_labels")
            # The run's precision whether or not training wrapped the model's forward (an evaluation-only run
            # never does): the same checkpoint must measure the same.
            with self.accelerator.autocast():
                out = model(**batch)
            for task in tasks:
                value = out.task_outputs.get(task.name)
                if value is None:  # a task the model does not train (eval only): its type reads the embeddings
                    value = task.kind.output(task, TaskInputs(out.embeddings, out.pair_embeddings))
                output = self.accelerator.gather_for_metrics(value.float())
                target = self.accelerator.gather_for_metrics(targets[task.name])
                outputs, all_targets, losses, sizes = parts[task.name]
                outputs.append(output.cpu())
                all_targets.append(target.cpu())
                if task.kind.compares_rows:
                    losses.append(float(task.kind.loss(task, output, target)))
                    sizes.append(int(task.kind.present(target).sum()))
        result = {}
        for task in tasks:
            outputs, targets, losses, sizes = parts[task.name]
            outputs, targets = torch.cat(outputs), torch.cat(targets)
            count = int(task.kind.present(targets).sum())
            if losses:
                loss = float(np.average(losses, weights=sizes)) if sum(sizes) else 0.0
            else:
                loss = float(task.kind.loss(task, outputs, targets))
            result[task.name] = (outputs.numpy(), targets.numpy(), torch.tensor(loss), count)
        return result, torch.cat(domains).numpy()

    def predict(self, *args, **kwargs):
        # The Trainer's prediction loop drops the task targets and knows one output; here outputs are per task.
        raise NotImplementedError(
            "SentMtlTrainer.predict is not supported: use evaluate() for metrics, "
            "sentmtl.encode() for embeddings, or the model's task_outputs."
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # `domain` labels rows for per-domain metrics only; the model does not take it (the trainer's own training
        # batches leave it out: `WithoutDomain`).
        inputs = {key: value for key, value in inputs.items() if key != "domain"}
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch=None):
        compiled = compiles(self.args)
        if compiled:  # the tasks this optimizer step trains, over its accumulated batches
            self._step_tasks = getattr(self, "_step_tasks", set()) | set(inputs.get("task_labels") or {})
        loss = super().training_step(model, inputs, num_items_in_batch)
        if compiled and self.accelerator.sync_gradients:  # the step's last backward pass
            drop_untrained_head_gradients(unwrap(model), self._step_tasks)
            self._step_tasks = set()
        # A NaN / inf loss poisons every weight at the next optimizer step, silently: stop before that step, so
        # the model in memory and every checkpoint on disk are still good ones. Checked after the backward pass,
        # where the Trainer reads the loss anyway (its NaN filter): checking between forward and backward would
        # stall a GPU at every step while the CPU waits to queue the backward kernels. One read of the value, tested
        # on the host: no kernel (`isfinite(loss).all()` was two, and a third op to read the answer back).
        value = loss.item()
        if not all_processes_agree(math.isfinite(value), device=loss.device):
            raise NonFiniteLossError(
                f"training stopped at step {self.state.global_step + 1} of {self.state.max_steps} "
                f"(epoch {self.state.epoch or 0:.2f}): the loss is {value}. No update was applied "
                "with it. Lower the learning rates, or use --bf16 instead of --fp16."
            )
        return loss


class WithoutDomain:
    """A collator whose batches leave out `domain`: the training batches', as only evaluation reads the rows'
    domains (per-domain metrics), and each tensor in a batch is copied to the device at every step."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows):
        batch = self.collate(rows)
        batch.pop("domain", None)
        return batch


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; raised before the optimizer step that would apply it."""


__all__ = [
    "NonFiniteLossError",
    "SentMtlTrainer",
    "all_processes_agree",
    "build_param_groups",
    "check_resumed_groups",
    "describe_param_groups",
    "merge_param_groups",
    "stream_position",
    "unwrap",
]
