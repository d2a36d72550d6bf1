"""The one place that loads models: a sentmtl checkpoint (folder or Hub id) or a fresh model around a plain encoder,
and the model a run trains (a fresh one with the run's tasks, or a checkpoint continued with them)."""

import logging
from dataclasses import replace

from transformers import AutoTokenizer, PretrainedConfig

from ..model.configuration_sentmtl import SentMtlConfig
from ..model.encoders import resolve_encoder, sentence_transformers_pooling, weights_loading_kwargs
from ..model.modeling_sentmtl import SentMtlModel
from ..model.task_spec import TaskSpec

logger = logging.getLogger(__name__)


def resolved_model_type(name_or_path) -> str | None:
    """`model_type` of the config that `from_pretrained(name_or_path)` would read: a folder, or a Hub id resolved
    through the Hub cache (offline too). None when there is no config to read."""
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(resolve_encoder(name_or_path))
    except (OSError, ValueError):
        return None
    return config_dict.get("model_type")


def is_sentmtl_checkpoint(name_or_path) -> bool:
    """True for a model saved by `SentMtlModel.save_pretrained`, local or on the Hub (decided by its config's
    `model_type`, not by where it lives)."""
    return name_or_path is not None and resolved_model_type(name_or_path) == SentMtlConfig.model_type


def load_model_and_tokenizer(name_or_path=None, allow_pickle_weights: bool = False, **config_overrides):
    """A `SentMtlModel` and its tokenizer from a sentmtl checkpoint, or a fresh model around a plain encoder.

    `None` means the bundled all-MiniLM-L6-v2. Only a fresh model takes `config_overrides`. Weights load from
    safetensors only, unless `allow_pickle_weights` (a pickle can run code when loaded).
    """
    if is_sentmtl_checkpoint(name_or_path):
        if config_overrides:
            raise ValueError(
                f"{name_or_path} is a trained sentmtl checkpoint: its architecture is fixed by its config.json, "
                f"so {sorted(config_overrides)} cannot be overridden."
            )
        model, tokenizer = _load_checkpoint(name_or_path, allow_pickle_weights)
        refresh_prompt_token_ids(model.config, tokenizer, name_or_path)
        return model, tokenizer
    model = SentMtlModel.from_encoder(name_or_path, allow_pickle_weights=allow_pickle_weights, **config_overrides)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(name_or_path))
    check_padding_side(model.config.pooling, tokenizer, name_or_path)
    # the pipeline's prompt, as ids (`SentMtlConfig.prompt_token_ids`); one the tokenizer cannot give warns
    refresh_prompt_token_ids(model.config, tokenizer, name_or_path or "the bundled encoder")
    return model, tokenizer


def _load_checkpoint(name_or_path, allow_pickle_weights: bool):
    """A sentmtl checkpoint and its tokenizer, before its pipeline prompt's ids are refreshed (`build_model` refreshes
    them once, after the run's tasks are merged in, so that a prompt the tokenizer cannot give warns once)."""
    model = SentMtlModel.from_pretrained(name_or_path, **weights_loading_kwargs(name_or_path, allow_pickle_weights))
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    check_padding_side(model.config.pooling, tokenizer, name_or_path)
    return model, tokenizer


def load_named_encoder(name_or_path, allow_pickle_weights: bool = False):
    """A model a run names besides its own (a distillation `teacher`, a hard-negative `miner`) and its tokenizer: a
    sentmtl checkpoint as saved; a plain encoder with the pooling its sentence-transformers config names, so that its
    pooled vector is the sentence embedding it was trained to compare (mean without one, as sentence-transformers
    pools a plain transformers model)."""
    if is_sentmtl_checkpoint(name_or_path):
        return load_model_and_tokenizer(name_or_path, allow_pickle_weights)
    pooling = sentence_transformers_pooling(name_or_path)
    return load_model_and_tokenizer(name_or_path, allow_pickle_weights, **({"pooling": pooling} if pooling else {}))


def check_padding_side(pooling: str, tokenizer, where) -> None:
    """`cls` and `pooler` pooling read a row's first position: with a tokenizer that pads on the left, every row
    shorter than its batch's longest would be read at a pad token, an embedding that depends on its batch-mates."""
    if pooling in ("cls", "pooler") and getattr(tokenizer, "padding_side", "right") == "left":
        raise ValueError(
            f"pooling={pooling!r} reads each row's first token, and the tokenizer of {where or 'the bundled encoder'} "
            "pads on the left (padding_side='left'), so a shorter row would be read at a pad token. Use "
            "pooling='mean', or save the tokenizer with padding_side='right'."
        )


def refresh_prompt_token_ids(config, tokenizer, where) -> None:
    """The pipeline prompt's token ids computed from the model's tokenizer (for a checkpoint: a config edited by hand,
    or saved before they were keyed by the prompt's text, may hold others), so the next save writes the right ones.
    A prompt the tokenizer cannot give as ids (a BPE or SentencePiece prompt ending in a space, E5's "query: ") leaves
    none, with a warning, rather than refusing the model: training, `encode` and the ONNX runtime prompt the text and
    need none; the sequence-classification view (the text-classification pipeline) then refuses."""
    try:
        config.set_prompt_token_ids(tokenizer)
    except ValueError as error:
        config.prompt_token_ids = None
        logger.warning(
            "%s: %s The text-classification pipeline (AutoModelForSequenceClassification) will refuse this model; "
            "training, sentmtl.encode, the model's own forward with prompted text and the ONNX runtime prompt the "
            "text and are not affected.",
            where,
            error,
        )


# Config fields that are training settings, not architecture: a continued run sets them itself (as it sets its tasks'
# losses and weights), rather than keeping its checkpoint's.
RUN_SETTINGS = ("matryoshka_self_distillation",)
# Config fields a continued run keeps although they are not architecture: the prompts its texts were learned with.
PROMPT_SETTINGS = ("prompts", "default_prompt_name")


def refuse_architecture_flags(model_args, config) -> None:
    """A checkpoint's config.json fixes its architecture: a flag set away from its default that the checkpoint does
    not share (`--embedding_size 384` on a 256-d model, `--projection_init identity`, …) would be ignored, so it is
    an error; so are `--prompts` and `--default_prompt_name` other than the checkpoint's (`PROMPT_SETTINGS`)."""
    defaults = type(model_args)(model_name_or_path=model_args.model_name_or_path).config_overrides()
    for name, value in model_args.config_overrides().items():
        if name in RUN_SETTINGS:
            continue
        if value != defaults[name] and value != getattr(config, name, None):
            if name in PROMPT_SETTINGS:
                raise ValueError(
                    f"--{name} {value!r}: {model_args.model_name_or_path} was trained with {name}="
                    f"{getattr(config, name, None)!r}, which a continued run keeps (its tasks learned their texts "
                    "with them). Drop the flag; a task takes another of the saved prompts with `prompt:`."
                )
            raise ValueError(
                f"--{name} {value} cannot apply to {model_args.model_name_or_path}: a trained sentmtl checkpoint keeps "
                f"the architecture in its config.json ({name}={getattr(config, name, None)!r}). Drop the flag, or "
                "start from a plain encoder."
            )


def build_model(model_args, tasks: list[TaskSpec]):
    """A fresh model with `tasks`, or the checkpoint to continue from: its headed tasks must be the run's (same
    type and labels); tasks without a head (similarity, distillation) may be added."""
    if is_sentmtl_checkpoint(model_args.model_name_or_path):
        logger.warning(
            "Continuing from the sentmtl checkpoint %s (its config fixes the architecture).",
            model_args.model_name_or_path,
        )
        model, tokenizer = _load_checkpoint(model_args.model_name_or_path, model_args.allow_pickle_weights)
        refuse_architecture_flags(model_args, model.config)
        check_continued_adapters(model_args, model.config)
        known = {task.name: task for task in model.config.task_specs}
        for task in tasks:
            mine = known.get(task.name)
            if task.has_head and (mine is None or (mine.type, mine.labels) != (task.type, task.labels)):
                has = f"{mine.type} with classes {mine.labels}" if mine else "no such task"
                raise ValueError(
                    f"{model_args.model_name_or_path} has {has} for {task.name!r}, not a {task.type} "
                    f"task with classes {task.labels}: continue with the same tasks and names."
                )
        # The checkpoint's tasks in its order (their heads are in the weights; a learned loss weight is per position)
        # with the run's losses and weights, then the run's new head-less tasks.
        wanted = {
            task.name: keep_saved_prompt(task, known.get(task.name), model_args.model_name_or_path) for task in tasks
        }
        merged = [wanted.get(name, mine).to_dict() for name, mine in known.items()]
        merged += [task.to_dict() for task in tasks if task.name not in known]
        if model.loss_log_variances is not None and len(merged) != len(known):
            raise ValueError(
                f"{model_args.model_name_or_path} learns one loss weight per task for {len(known)} tasks; "
                f"this run has {len(merged)}. Continue with the same tasks, or --distillation_weight 0."
            )
        model.config.tasks = merged
        for name in RUN_SETTINGS:  # the run's value (its default when unset), not the checkpoint's
            setattr(model.config, name, getattr(model_args, name))
        model.config._validate_matryoshka()  # the checkpoint's Matryoshka sizes against the run's tasks and settings
        model.config._validate_prompts()  # the run's tasks name the checkpoint's prompts
        refresh_prompt_token_ids(model.config, tokenizer, model_args.model_name_or_path)
        return model, tokenizer
    return load_model_and_tokenizer(
        model_args.model_name_or_path,
        model_args.allow_pickle_weights,
        tasks=[task.to_dict() for task in tasks],
        lora=model_args.lora_settings(),
        **model_args.config_overrides(),
    )


def keep_saved_prompt(task: TaskSpec, saved: TaskSpec | None, where) -> TaskSpec:
    """A continued run's task that names no prompt keeps the one saved with its namesake: the checkpoint learned that
    task's texts with it, and falling back to the default prompt would change them silently. A saved prompt the run's
    task cannot take (another type, without that text) is refused, naming both."""
    if saved is None or saved.prompt is None or task.prompt is not None:
        return task
    try:
        return replace(task, prompt=saved.prompt)
    except ValueError:
        raise ValueError(
            f"task {task.name!r} is saved in {where} with prompt {saved.prompt!r}, which a {task.type} task cannot "
            "take: name its prompt in the run file (prompt: ...)."
        ) from None


def check_continued_adapters(model_args, config) -> None:
    """Continuing a checkpoint: an adapter folder continues its adapters with the same LoRA flags; LoRA flags on a
    checkpoint without adapters are refused (adapters are trained over a plain encoder, which it is not)."""
    mine, wanted = config.lora, model_args.lora_settings()
    where = model_args.model_name_or_path
    if mine is None and wanted is not None:
        raise ValueError(
            f"--lora_r {wanted['r']}: {where} is a trained sentmtl model without LoRA adapters, and adapters are "
            "trained over a plain encoder. Start from an encoder (--model_name_or_path), or continue it without "
            "--lora_r."
        )
    if mine is None:
        return
    flags = f"--lora_r {mine['r']} --lora_alpha {mine['alpha']:g} --lora_dropout {mine['dropout']:g}"
    same = wanted is not None and all(wanted[key] == mine[key] for key in ("r", "alpha", "dropout"))
    targets = wanted and wanted["target_modules"]
    if not same or (targets and sorted(targets) != sorted(mine["target_modules"])):
        raise ValueError(
            f"{where} holds LoRA adapters ({flags} --lora_target_modules {' '.join(mine['target_modules'])}): "
            "continue them with those flags, or merge them first (SentMtlModel.from_pretrained(folder), "
            ".merge_lora(), .save_pretrained(new folder)) and continue the merged model without --lora_r."
        )


__all__ = [
    "build_model",
    "check_continued_adapters",
    "is_sentmtl_checkpoint",
    "keep_saved_prompt",
    "load_model_and_tokenizer",
    "load_named_encoder",
    "refresh_prompt_token_ids",
    "resolved_model_type",
]
