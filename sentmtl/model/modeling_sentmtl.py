"""`SentMtlModel`: a pretrained encoder turned into a multi-task sentence transformer.

encoder ─> pooling ─> shared_projection (hidden → embedding_size) ─> L2 normalise ─> embeddings
                                                  ├─ <task>_head per classification / multilabel / score / regression
                                                  │    task (the seed's: classification_head, sentiment_head)
                                                  └─ similarity and distillation tasks train the embeddings directly

Its output (`modeling_outputs.SentMtlOutput`), how the task losses combine (`loss_weighting`) and the folder's ONNX
export that a save removes (`model_folder`) have modules of their own, their names importable from here too.
"""

import logging

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .checkpointing import CHECKPOINTABLE_LAYERS, add_checkpointing_switch, can_checkpoint, has_checkpointing_switch
from .configuration_sentmtl import SentMtlConfig
from .distributed import gather_rows, scale_for_ddp, world
from .lora import add_lora, after_save, load_if_adapter_folder, save_kwargs, view_if_adapter_folder
from .loss_weighting import combine_task_losses
from .losses import as_float32, l2_normalize
from .model_folder import MANIFEST, ONNX_FOLDER, remove_stale_export
from .modeling_outputs import SentMtlOutput
from .modeling_parts import ModelParts, ParameterGroup, Pooling, TaskHead
from .prompts import with_pipeline_prompt
from .task_spec import TaskSpec, first_task
from .task_types import TaskInputs, prefix_self_distillation_loss

logger = logging.getLogger(__name__)


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

    def _sentmtl_encoder(self):
        return self.encoder if isinstance(self, SentMtlModel) else self.sentmtl.encoder

    def check_activation_checkpointing(self) -> None:
        """Refuse activation checkpointing when the encoder has no layers that can be checkpointed: neither
        transformers' switch nor a layer class in `checkpointing.CHECKPOINTABLE_LAYERS`. transformers' own refusal
        comes only when training starts, after the data is prepared, and names this class."""
        # transformers checkpoints the modules that carry a `gradient_checkpointing` switch (an encoder's layers); the
        # encoder class's own `supports_gradient_checkpointing` is not what it reads. sentmtl gives the switch to
        # layers known to be safe to recompute that lack it (MPNet's: `checkpointing`).
        if not can_checkpoint(self._sentmtl_encoder()):
            import transformers

            encoder = self._sentmtl_encoder()
            raise ValueError(
                f"--activation_checkpointing (or --gradient_checkpointing): the encoder ({type(encoder).__name__}, "
                f"model_type {encoder.config.model_type}) does not support activation checkpointing in transformers "
                f"{transformers.__version__}, and its layers are not among those sentmtl checkpoints itself "
                f"({', '.join(layer.__name__ for layer in CHECKPOINTABLE_LAYERS)}). Drop the flag, or fine-tune an "
                "encoder that supports it (BERT, RoBERTa, DistilBERT and MPNet do)."
            )

    def activation_checkpointing_enable(self, *args, **kwargs):
        self.check_activation_checkpointing()
        add_checkpointing_switch(self._sentmtl_encoder())
        return super().activation_checkpointing_enable(*args, **kwargs)

    def activation_checkpointing_disable(self):
        # Nothing to switch off, where transformers would raise its "not compatible" error on a plain disable.
        if has_checkpointing_switch(self._sentmtl_encoder()):
            super().activation_checkpointing_disable()

    def _init_weights(self, module):
        # The encoder is a `PreTrainedModel` of its own and initialises itself; this covers the heads.
        super()._init_weights(module)
        if isinstance(module, SentMtlModel) and module.loss_log_variances is not None:
            nn.init.zeros_(module.loss_log_variances)  # s_i = 0: every task starts at weight exp(0) = 1, the plain sum
        if module is getattr(self, "shared_projection", None) and self.config.projection_init == "identity":
            nn.init.eye_(module.weight)
            nn.init.zeros_(module.bias)
        if isinstance(module, TaskHead) and module.logit_scale is not None:
            nn.init.constant_(module.logit_scale, self.config.head_logit_scale)


class SentMtlModel(ModelParts, SentMtlPreTrainedModel):
    def __init__(self, config: SentMtlConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else AutoModel.from_config(config.encoder_config)
        # One config object for the whole model, so edits to `model.config.encoder_config` reach the encoder — and
        # its layers, which keep their own reference to the config they were built with: a switch of attention
        # implementation that reached the encoder but not its layers would run them with the old one, unmasked
        # (found in review: flattened batches attended across sentences).
        config.encoder_config._attn_implementation = self.encoder.config._attn_implementation
        built_with = self.encoder.config
        for module in self.encoder.modules():
            if getattr(module, "config", None) is built_with:
                module.config = config.encoder_config
        if config.pooling == "pooler" and getattr(self.encoder, "pooler", None) is None:
            raise ValueError(
                f"pooling='pooler' needs an encoder with a pooler layer; this {type(self.encoder).__name__} has none: "
                "use 'mean' or 'cls'."
            )
        if config.pooling != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            # An unused pooler would get no gradients: dead weights, and an error under DDP.
            self.encoder.pooler = None
        self.pooling = Pooling(config.pooling)
        if config.projection_init == "identity" and config.embedding_size != config.hidden_size:
            # Checked here, not in the config: only the encoder knows its hidden size for sure.
            raise ValueError(
                f"projection_init='identity' needs embedding_size equal to the encoder's hidden size "
                f"({config.hidden_size}); got embedding_size={config.embedding_size}."
            )
        self.shared_projection = nn.Linear(config.hidden_size, config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        for task in self.tasks:
            if task.has_head:
                scale = config.head_logit_scale if task.kind.scaled_head else None
                setattr(self, f"{task.name}_head", TaskHead(config.embedding_size, task.head_size, scale))
        if config.loss_weighting == "uncertainty":
            self.loss_log_variances = nn.Parameter(torch.zeros(len(self.tasks)))
        else:
            self.loss_log_variances = None
        self.post_init()
        if config.lora is not None:
            # After post_init, whose weight initialisation would overwrite the adapters' (B = 0: they start as no-ops).
            add_lora(self)

    @property
    def tasks(self) -> list[TaskSpec]:
        """The model's tasks, read from the config (which owns them: a continued run or label smoothing edits the
        config, and the model follows)."""
        return self.config.task_specs

    def save_pretrained(self, save_directory, *args, **kwargs):
        # With a classification task, the Hub's text-classification widget and `pipeline(..., trust_remote_code=True)`
        # find the sequence-classification view through auto_map (save_pretrained adds the other two entries).
        if first_task(self.tasks, "classification") is not None:
            view = "modeling_sentmtl.SentMtlForSequenceClassification"
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModelForSequenceClassification": view,
            }
        kwargs = save_kwargs(self, kwargs)  # LoRA: every weight but the frozen encoder's (it comes from its base)
        saved = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            after_save(self, save_directory)  # LoRA: the adapter in peft's format; else a stale adapter/ removed
            remove_stale_export(save_directory)
        return saved

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # A LoRA adapter folder holds no encoder weights: `lora` loads them from its base encoder, checked.
        model = load_if_adapter_folder(cls, pretrained_model_name_or_path, args, kwargs)
        return model if model is not None else super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_encoder(cls, name_or_path=None, allow_pickle_weights: bool = False, **config_overrides) -> "SentMtlModel":
        """A fresh multi-task model around a pretrained encoder's weights (the heads start untrained).

        With no name, the bundled all-MiniLM-L6-v2 is used (its weights are checked against their sha256 once).
        `config_overrides` are `SentMtlConfig` fields, e.g. `pooling="cls", embedding_size=128, tasks=[...]`. Without
        `pooling` (or with None), the encoder's own: the one its sentence-transformers config names (BGE's CLS,
        E5's mean), else mean. Weights load from safetensors only unless `allow_pickle_weights`.
        """
        from .encoders import (
            DEFAULT_ENCODER_NAME,
            resolve_encoder,
            sentence_transformers_pooling,
            weights_loading_kwargs,
        )

        if config_overrides.get("pooling") is None:
            config_overrides.pop("pooling", None)
            # the pooling the encoder was trained to be compared with; what follows it, the projection replaces
            found = sentence_transformers_pooling(name_or_path, whole_embedding=False)
            if found is not None:
                config_overrides["pooling"] = found
                if found != "mean":  # the config's default: worth a line only when it differs
                    logger.warning("pooling %r: %s's sentence-transformers config pools so.", found, name_or_path)
        path = resolve_encoder(name_or_path)
        encoder = AutoModel.from_pretrained(path, **weights_loading_kwargs(path, allow_pickle_weights))
        config_overrides.setdefault("encoder_name_or_path", str(name_or_path or DEFAULT_ENCODER_NAME))
        config = SentMtlConfig(encoder_config=encoder.config.to_dict(), **config_overrides)
        return cls(config, encoder=encoder)

    def pool(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """The encoder's pooled sentence vector `[batch, hidden]`, before the projection."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(**kwargs)
        return self.pooling(out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None))

    def embed(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        """Sentence embeddings `[batch, embedding_size]`: pooled, projected and (by default) L2-normalised."""
        return self.project(self.pool(input_ids, attention_mask, token_type_ids))

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled vectors `[batch, hidden]` → embeddings `[batch, embedding_size]`: the shared projection and (by
        default) the L2 normalisation, in fp32 whatever the pooled vectors' dtype."""
        # The projection and the normalisation run in fp32 even under bf16 / fp16 autocast, or after an encoder whose
        # weights were cast to half precision (`encode(precision="fp16-weights")`): they are ~0.5% of the FLOPs, and
        # rounding the 256 outputs (and their norm) to bf16 alone costs ~0.004 of cosine similarity.
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            embeddings = self.shared_projection(as_float32(pooled))
            return l2_normalize(embeddings) if self.config.normalize else embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task_labels: dict[str, torch.Tensor] | None = None,
        pair_input_ids: torch.Tensor | None = None,
        pair_attention_mask: torch.Tensor | None = None,
        pair_token_type_ids: torch.Tensor | None = None,
        negative_input_ids: torch.Tensor | None = None,
        negative_attention_mask: torch.Tensor | None = None,
        negative_token_type_ids: torch.Tensor | None = None,
        complete_tasks: tuple[str, ...] = (),
    ) -> SentMtlOutput:
        r"""
        task_labels (`dict[str, torch.Tensor]`, *optional*): targets by task name, in each type's layout (see
            `sentmtl.model.task_types`); only the tasks named here are computed, and within a task the rows whose target
            is absent (-100 for class ids, NaN otherwise) are left out. The seed's model:
            `{"classification": class ids, "sentiment": scores in [0, 1]}`.
        pair_input_ids / pair_attention_mask / pair_token_type_ids (*optional*): the second sentence of each pair,
            for similarity and contrastive tasks.
        negative_input_ids / negative_attention_mask / negative_token_type_ids (*optional*): `[batch, k, length]`,
            k hard negatives per row, for contrastive tasks.
        complete_tasks (`tuple[str]`, *optional*): the tasks in `task_labels` whose target every row carries, as the
            collator found on the host (`MultiTaskCollator`). Their losses take a plain mean, without the masked
            one's kernels. A task named here must have no absent target; under DDP it is not read (each process
            sees only its own rows, and the losses are taken over the gathered batch).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeddings = self.embed(input_ids, attention_mask, token_type_ids)
        pair_embeddings = None
        if pair_input_ids is not None:
            if pair_attention_mask is None:
                pair_attention_mask = torch.ones_like(pair_input_ids)
            pair_embeddings = self.embed(pair_input_ids, pair_attention_mask, pair_token_type_ids)
        negative_embeddings = self.embed_negatives(negative_input_ids, negative_attention_mask, negative_token_type_ids)
        features = self.dropout(embeddings)
        tasks = self.tasks  # read from the config once per forward
        targets = task_labels or {}
        complete_tasks = complete_tasks or ()
        unknown = sorted(set(targets) - {task.name for task in tasks})
        if unknown:
            raise ValueError(
                f"task_labels names {unknown}, which are not tasks of this model ({', '.join(t.name for t in tasks)})."
            )

        task_outputs, task_losses, labelled = {}, {}, {}
        # Only learned weights read whether a task had a target in the batch; the static sum does not, and the check
        # would cost each task two to four kernels a step.
        flag_labelled = self.loss_log_variances is not None
        matryoshka = self.config.matryoshka()
        for task in tasks:
            if task.kind.pairs and pair_embeddings is None and task.name not in targets:
                continue  # a pair task without pairs: nothing to show, nothing asked
            head = getattr(self, f"{task.name}_head")(features) if task.has_head else None
            inputs = TaskInputs(embeddings, pair_embeddings, head, negative_embeddings)
            output = task.kind.output(task, inputs)
            task_outputs[task.name] = output
            if task.name not in targets:
                continue
            if matryoshka and task.on_prefixes:
                # Matryoshka: the weighted mean of the loss over the embedding's truncated, re-normalised prefixes.
                total = sum(weight for _, weight in matryoshka)
                results = [
                    (
                        weight,
                        self._task_loss(
                            task,
                            output
                            if size == self.config.embedding_size
                            else task.kind.output(task, inputs.truncated(size, self.config.normalize)),
                            targets[task.name],
                            flag_labelled,
                            task.name in complete_tasks,
                        ),
                    )
                    for size, weight in matryoshka
                ]
                task_losses[task.name] = torch.stack([weight * loss for weight, (loss, _) in results]).sum() / total
                labelled[task.name] = results[0][1][1]  # the same rows at every size
            else:
                task_losses[task.name], labelled[task.name] = self._task_loss(
                    task, output, targets[task.name], flag_labelled, task.name in complete_tasks
                )
        loss = self.combine_losses(task_losses, tasks, labelled) if task_losses else None
        if loss is not None and self.config.matryoshka_self_distillation and matryoshka:
            every = [
                embeddings,
                pair_embeddings,
                None if negative_embeddings is None else negative_embeddings.reshape(-1, embeddings.shape[-1]),
            ]
            loss = loss + self.config.matryoshka_self_distillation * self.prefix_self_distillation(
                torch.cat([e for e in every if e is not None]), matryoshka
            )

        first = {kind: first_task(tasks, kind) for kind in ("classification", "score")}
        sentiment_logits = task_outputs.get(first["score"].name) if first["score"] else None
        return SentMtlOutput(
            loss=loss,
            task_losses=task_losses or None,
            logits=task_outputs.get(first["classification"].name) if first["classification"] else None,
            sentiment_scores=first["score"].kind.predict(first["score"], sentiment_logits)
            if sentiment_logits is not None
            else None,
            sentiment_logits=sentiment_logits,
            task_logits={task.name: task_outputs[task.name] for task in tasks if task.has_head},
            task_outputs=task_outputs,
            embeddings=embeddings,
            pair_embeddings=pair_embeddings,
            classification_loss=task_losses.get(first["classification"].name) if first["classification"] else None,
            sentiment_loss=task_losses.get(first["score"].name) if first["score"] else None,
        )

    def prefix_self_distillation(self, embeddings: torch.Tensor, matryoshka: list[tuple[int, float]]) -> torch.Tensor:
        """`prefix_self_distillation_loss` over these rows; under DDP over the gathered global batch, as the tasks'
        losses are."""
        if self.training and world()[0] > 1:
            return scale_for_ddp(prefix_self_distillation_loss(gather_rows(embeddings), matryoshka))
        return prefix_self_distillation_loss(embeddings, matryoshka)

    def _task_loss(
        self,
        task: TaskSpec,
        output: torch.Tensor,
        targets: torch.Tensor,
        flag_labelled: bool = True,
        complete: bool = False,
    ):
        """(loss, whether any row carried a target) over the rows the loss sees. Without `flag_labelled` the second
        is True, not looked up (only learned loss weights read it); `complete` (every row carries one, known on the
        host) makes it True too, and a type that takes it a plain mean."""
        # The task's output is the embedding (or its re-normalised prefix) where its type says so: unit rows when the
        # model normalises, which its loss need not normalise again.
        options = {"unit_rows": True} if task.kind.takes_unit_rows and self.config.normalize else {}
        distributed = self.training and world()[0] > 1
        complete = complete and not distributed  # another process's rows may lack targets
        if complete and task.kind.takes_complete:
            options["complete"] = True
        if distributed:
            # Under DDP this process holds a share of the global batch. A loss that compares rows must see all of
            # them, and a mean over rows must count every process's rows alike (shares can differ by a row, and DDP
            # averages the processes' gradients as equals): so every task's loss is taken over the gathered batch.
            # The gradient flows to the local rows only and is scaled back to the one-process gradient.
            output, targets = gather_rows(output), gather_rows(targets)
            loss = scale_for_ddp(task.kind.loss(task, output, targets, **options))
        else:
            loss = task.kind.loss(task, output, targets, **options)
        return loss, task.kind.present(targets).any() if flag_labelled and not complete else True

    def combine_losses(
        self, task_losses: dict, tasks: list[TaskSpec] | None = None, labelled: dict | None = None
    ) -> torch.Tensor:
        """The weighted sum of the losses of the tasks present (a dict by task name). `labelled`: {task: whether any
        row carried its target} (a bool, or a bool tensor, so no host sync); a task without one adds nothing."""
        tasks = tasks if tasks is not None else self.tasks
        return combine_task_losses(task_losses, tasks, self.loss_log_variances, labelled)


class SentMtlForSequenceClassification(SentMtlPreTrainedModel):
    """The first classification task as a plain sequence classifier, so `pipeline("text-classification", model=dir)`,
    `AutoModelForSequenceClassification` and the Hub widget work on a sentmtl checkpoint. The checkpoint's keys load
    under `sentmtl.` (the base model prefix), as a BERT checkpoint loads into BertForSequenceClassification."""

    def __init__(self, config: SentMtlConfig):
        super().__init__(config)
        self.sentmtl = SentMtlModel(config)
        self.task = first_task(self.sentmtl.tasks, "classification")
        if self.task is None:
            raise ValueError("this sentmtl model has no classification task to serve as a sequence classifier.")
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        # An adapter folder's weights are not all in its model.safetensors: loaded as a SentMtlModel, then viewed.
        view = view_if_adapter_folder(cls, SentMtlModel, pretrained_model_name_or_path, args, kwargs)
        return view if view is not None else super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        # **kwargs: the pipeline passes tokenizer outputs and flags (return_dict …) that the model has no use for.
        # The pipeline tokenises without the task's prompt: the model adds it (`prompts.with_pipeline_prompt`).
        input_ids, attention_mask, token_type_ids = with_pipeline_prompt(
            self.config, input_ids, attention_mask, token_type_ids
        )
        out = self.sentmtl(
            input_ids,
            attention_mask,
            token_type_ids,
            task_labels={self.task.name: labels} if labels is not None else None,
        )
        return SequenceClassifierOutput(loss=out.loss, logits=out.task_outputs[self.task.name])


def register_auto_classes() -> None:
    """Make `AutoConfig` / `AutoModel` / `AutoModelForSequenceClassification` resolve `model_type="sentmtl"` without
    `trust_remote_code`."""
    AutoConfig.register(SentMtlConfig.model_type, SentMtlConfig, exist_ok=True)
    AutoModel.register(SentMtlConfig, SentMtlModel, exist_ok=True)
    AutoModelForSequenceClassification.register(SentMtlConfig, SentMtlForSequenceClassification, exist_ok=True)


# `save_pretrained` writes `auto_map` into config.json and copies this file and the modules it imports (recursively:
# configuration, task spec, task types and their losses, parts, outputs, loss weighting, model folder, distributed,
# encoders, checkpointing) beside the weights, so `AutoModel.from_pretrained(dir, trust_remote_code=True)` works where
# sentmtl is not installed. The code files stay free of imports outside torch / transformers / stdlib (transformers
# refuses remote code whose imports are missing; optional ones sit in try blocks).
SentMtlConfig.register_for_auto_class()
SentMtlModel.register_for_auto_class("AutoModel")
SentMtlForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")


__all__ = [
    "MANIFEST",
    "ONNX_FOLDER",
    "ParameterGroup",
    "Pooling",
    "SentMtlForSequenceClassification",
    "SentMtlModel",
    "SentMtlOutput",
    "SentMtlPreTrainedModel",
    "TaskHead",
    "register_auto_classes",
    "remove_stale_export",
]
