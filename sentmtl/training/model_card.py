"""The model card (README.md) written beside every trained model, and uploaded with it by `--push_to_hub`."""

from ..data import corpus
from ..model.encoders import DEFAULT_ENCODER_NAME
from ..model.task_spec import first_task
from ..tasks.io import task_io
from .arguments import DEFAULT_TEST_SIZE
from .report import metric_rows

# Training arguments worth a line in the card, in this order (the rest is in run_config.yaml).
_CARD_TRAINING_KEYS = (
    "num_train_epochs",
    "per_device_train_batch_size",
    "learning_rate",
    "backbone_learning_rate",
    "shared_learning_rate",
    "head_learning_rate",
    "layerwise_lr_decay",
    "weight_decay",
    "warmup_steps",
    "freeze",
    "freeze_backbone_layers",
    "bf16",
    "seed",
    "test_size",
    "max_samples",
    "sources",
    "max_length",
)


def build_model_card(
    config, eval_metrics: dict, run_config: dict, train_metrics: dict | None = None, repo_id: str | None = None
) -> str:
    """Markdown with a YAML header: what the model is, its data, how it was trained, what it scored, how to use it.

    Everything comes from the arguments (the config, the measured metrics, the resolved run arguments), so the card
    always describes the run that wrote it.
    """
    encoder = config.encoder_name_or_path or "(unknown encoder)"
    encoder_on_hub = encoder == DEFAULT_ENCODER_NAME or ("/" in encoder and not encoder.startswith(("/", ".")))
    tasks = config.task_specs
    run_tasks = {task["name"]: task for task in run_config.get("tasks") or []}
    on_uci = not run_config.get("train_file") and (
        not run_tasks or any(t.get("data", "uci") == "uci" for t in run_tasks.values())
    )
    name = repo_id or "path/to/this/model"
    header = [
        "---",
        "library_name: transformers",
        "pipeline_tag: feature-extraction",
        "tags: [sentmtl, sentence-embeddings, sentiment-analysis, multi-task]",
    ]
    if encoder_on_hub:
        header.append(f"base_model: {encoder}")
    if encoder == DEFAULT_ENCODER_NAME:
        header.append("license: apache-2.0  # the base encoder's license")
    header.append("---")

    hidden = config.encoder_config.hidden_size
    test_size = run_config.get("test_size") or DEFAULT_TEST_SIZE
    head_lines = [
        f"    ├─ {t.name}_head Linear({config.embedding_size} → {t.head_size})  {_task_description(t)}"
        for t in tasks
        if t.has_head
    ]
    head_lines += [f"    ├─ {t.name}: {_task_description(t)}" for t in tasks if not t.has_head]
    if head_lines:
        head_lines[-1] = head_lines[-1].replace("├─", "└─", 1)
    lines = [
        *header,
        "",
        f"# {repo_id.split('/')[-1] if repo_id else 'sentmtl multi-task sentence transformer'}",
        "",
        f"A multi-task sentence transformer fine-tuned with sentmtl from `{encoder}`. "
        f"One forward pass gives a unit-length sentence embedding and the outputs of its tasks: "
        f"{'; '.join(f'`{t.name}` ({_task_description(t)})' for t in tasks)}.",
        "",
        "## Architecture",
        "",
        "```",
        f"encoder ({config.encoder_config.model_type}, {config.encoder_config.num_hidden_layers} layers, hidden {hidden})"
        f" → {config.pooling} pooling → shared_projection Linear({hidden} → {config.embedding_size})"
        f"{' → L2 normalise' if config.normalize else ''}",
        *head_lines,
        f"loss = {_loss_description(config)}",
        *([_matryoshka_description(config)] if config.matryoshka_dims else []),
        *([_lora_description(config, run_config)] if config.lora else []),
        "```",
        "",
        "## Training data",
        "",
    ]
    if on_uci:
        lines += [
            corpus._DESCRIPTION.strip().replace("\n", " "),
            "",
            f"Sources used: {', '.join(run_config.get('sources') or corpus.SOURCES)}. Split: leak-free stratified "
            f"{1 - test_size:.0%} / {test_size:.0%} by distinct sentence (case and punctuation ignored) "
            f"(seed {run_config.get('seed')})"
            + (
                f", a stratified subset of {run_config['max_samples']} sentences."
                if run_config.get("max_samples")
                else "."
            ),
            "",
            f"License: {corpus._LICENSE} ({corpus._HOMEPAGE}).",
            "",
            "```bibtex",
            corpus._CITATION.strip(),
            "```",
            "",
        ]
    if run_config.get("train_file"):
        files = ", ".join(f"`{run_config[k]}`" for k in ("train_file", "validation_file") if run_config.get(k))
        lines += [f"The user's own data: {files}.", ""]
    for name, task in run_tasks.items():
        if task.get("data", "uci") != "uci":
            lines += [
                f"Task `{name}`: `{task['data']}`"
                + (
                    " (STS Benchmark, Cer et al. 2017; scores CC BY-SA 4.0)."
                    if isinstance(task["data"], dict) and "stsb" in task["data"]
                    else "."
                ),
                "",
            ]

    lines += ["## Training configuration", "", "| argument | value |", "| --- | --- |"]
    lines += [f"| `{key}` | {_shown(key, run_config[key])} |" for key in _CARD_TRAINING_KEYS if key in run_config]
    if train_metrics:
        trained = train_metrics.get("trainable_parameters")
        total = train_metrics.get("total_parameters")
        if trained is not None and total is not None:
            lines.append(f"| trainable parameters | {trained:,} of {total:,} |")
        if "train_runtime" in train_metrics:
            lines.append(f"| training time | {train_metrics['train_runtime']:.0f} s |")
    if config.lora:
        lines.append(
            f"| LoRA | r={config.lora['r']}, alpha={config.lora['alpha']:g}, dropout={config.lora['dropout']:g} |"
        )
    lines += ["", "## Evaluation", ""]
    rows = metric_rows(eval_metrics, tasks)
    if not rows:
        lines += ["No evaluation was run.", ""]
    for section in dict.fromkeys(task for task, _, _ in rows):
        title = "All tasks" if section == "all" else f"Task `{section}`"
        lines += [
            f"### {title}",
            "",
            "| metric | value |",
            "| --- | --- |",
            *[
                f"| {name} | {value if isinstance(value, int) else f'{value:.4f}'} |"
                for task, name, value in rows
                if task == section
            ],
            "",
        ]

    lines += [
        "## Intended use and limits",
        "",
        "- Sentence embeddings for search, clustering and similarity of short English review-like text, and "
        "positive / negative sentiment of such sentences.",
        "- Trained on short, single-sentence product, film and restaurant reviews with clear polarity: neutral, "
        "mixed, sarcastic, long or out-of-domain text (and other languages) will be classified less reliably.",
        "- The Task B score is a calibrated-looking probability learned from binary labels, not a graded rating.",
        "- Do not use it for decisions about people.",
        "",
        "## Usage",
        "",
        *_prompts_section(config),
        *(
            [
                f"This folder holds LoRA adapters, not the encoder they adapt: loading it needs peft (`pip install "
                f'"sentmtl[peft]"`) and reads the base encoder `{encoder}` (checked against the weights the adapters '
                "were trained on).",
                "",
            ]
            if config.lora and not run_config.get("merge_lora")
            else []
        ),
        "With the sentmtl package (no `trust_remote_code`):",
        "",
        "```python",
        "import sentmtl",
        f'model, tokenizer = sentmtl.load_model_and_tokenizer("{name}")',
        'embeddings = sentmtl.encode(model, ["I loved it.", "Never again."], tokenizer)  # unit rows',
        *_prompted_usage(config, "sentmtl.encode(model, [{text}], tokenizer, {prompt})"),
        *(
            [
                f'small = sentmtl.encode(model, ["I loved it."], tokenizer, truncate_dim={min(config.matryoshka_dims)})'
                "  # Matryoshka: a shorter embedding"
            ]
            if config.matryoshka_dims
            else []
        ),
        "```",
        "",
        "Without it, the code files in this folder are used:",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        f'model = AutoModel.from_pretrained("{name}", trust_remote_code=True)',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}", trust_remote_code=True)',
        'batch = tokenizer(["I loved it."], padding=True, return_tensors="pt")',
        "with torch.no_grad():",
        "    out = model(**batch)",
        "out.embeddings, out.task_logits  # every task's output, by name",
        "```",
        "",
        *(
            [
                f"The first classification task (`{first_task(tasks, 'classification').name}`) as a "
                "text-classification pipeline (the Hub widget's client):",
                "",
                "```python",
                "from transformers import pipeline",
                f'pipeline("text-classification", model="{name}", trust_remote_code=True)("I loved it.")',
                "```",
                "",
            ]
            if first_task(tasks, "classification") and _pipeline_prompts(config)
            else []
        ),
        *(
            [
                f"The first classification task (`{first_task(tasks, 'classification').name}`) has no "
                "text-classification pipeline: its tokenizer merges the end of the task's prompt with the text's "
                "first word, so the pipeline could not add the prompt by token ids (it refuses). Use sentmtl or "
                "the ONNX runtime, which prompt the text.",
                "",
            ]
            if first_task(tasks, "classification") and not _pipeline_prompts(config)
            else []
        ),
        "From the command line, and as a sentence-transformers model:",
        "",
        "```bash",
        f'python run_embed.py --model_name_or_path {name} "I loved it." "Never again."',
        f"python run_embed.py --model_name_or_path {name} --export_sentence_transformer st-model/",
        *(
            [
                f"python run_embed.py --model_name_or_path {name} --export_sentence_transformer st-model-{min(config.matryoshka_dims)}/ "
                f"--truncate_dim {min(config.matryoshka_dims)}"
            ]
            if config.matryoshka_dims
            else []
        ),
        "```",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        'SentenceTransformer("st-model/").encode(["I loved it."])',
        *_prompted_usage(config, 'SentenceTransformer("st-model/").encode([{text}], {prompt})', assign=False),
        "```",
        "",
    ]
    return "\n".join(lines)


# The usage snippets' retrieval example: a query and a document.
_QUERY, _DOCUMENT = '"How long does the battery last?"', '"The battery lasts two days."'


def _pipeline_prompts(config) -> bool:
    """Whether the text-classification pipeline can run: no prompt for it to add, or the prompt's token ids kept
    (none when the tokenizer merges the prompt's end with the text, `loading.refresh_prompt_token_ids`)."""
    name = config.pipeline_prompt_name()
    return name is None or config.prompts[name] in (config.prompt_token_ids or {})


def _prompted_usage(config, call: str, assign: bool = True) -> list[str]:
    """Usage lines for a prompted model: with a contrastive task, queries and documents each with the prompt its
    anchors and positives were trained with (a side trained without one is left out: encode adds none by itself);
    otherwise one text with the first prompt. `call`: the call with `{text}` and `{prompt}`."""
    if not config.prompts:
        return []
    task = first_task(config.task_specs, "contrastive")
    if task is None:
        name = next(iter(config.prompts))
        return [("prompted = " if assign else "") + call.format(text='"I loved it."', prompt=f'prompt_name="{name}"')]
    lines = []
    for role, variable, text in (("text", "queries", _QUERY), ("text_pair", "documents", _DOCUMENT)):
        name = config.prompt_name_for(task, role)
        if name is None:  # no prompt, and no default that encode would add
            continue
        line = call.format(text=text, prompt=f'prompt_name="{name}"') + f"  # retrieval {variable} (task `{task.name}`)"
        lines.append(f"{variable} = {line}" if assign else line)
    return lines


def _prompts_section(config) -> list[str]:
    """The prompts this model's texts take: which, where, and that every client applies them by name."""
    if not config.prompts:
        return []
    lines = ["**Prompts.** This model's texts take these prefixes (pooling includes their tokens):", ""]
    lines += [f"- `{name}`: {text!r}" for name, text in config.prompts.items()]
    default = config.default_prompt_name
    lines += [
        "",
        f"Default prompt: `{default}` (what a text takes unless told otherwise)."
        if default
        else "No default prompt: name one with `prompt_name=` where the tasks did.",
    ]
    for task in config.task_specs:
        names = {role: config.prompt_for(task, role) for role in task.kind.text_roles}
        if any(names.values()):
            shown = ", ".join(f"{role} {text!r}" for role, text in names.items() if text)
            lines.append(f"- task `{task.name}` was trained with: {shown}")
    lines += [
        "",
        "`sentmtl.encode(..., prompt_name=...)`, `run_embed.py --prompt_name`, the sentence-transformers export "
        "(`encode(prompt_name=...)`) and the ONNX runtime apply them by name; "
        + (
            "the text-classification pipeline adds its task's prompt itself."
            if _pipeline_prompts(config)
            else "the text-classification pipeline cannot add its task's prompt (the tokenizer merges it with the "
            "text's first word) and refuses."
        ),
        "",
    ]
    return lines


def _task_description(task) -> str:
    return task_io(task).describe(task)


def _matryoshka_description(config) -> str:
    full_only = [task.name for task in config.task_specs if not task.matryoshka]
    return "".join(
        [
            f"Matryoshka: every embedding loss also on the first {', '.join(map(str, config.matryoshka_dims))} dimensions "
            "(re-normalised)",
            f" (not {', '.join(full_only)}: the full embedding only)" if full_only else "",
            f", and each shorter prefix's cosines pulled to the full embedding's (self-distillation, weight "
            f"{config.matryoshka_self_distillation:g})"
            if config.matryoshka_self_distillation
            else "",
            "; truncate with encode(..., truncate_dim=d).",
        ]
    )


def _lora_description(config, run_config: dict) -> str:
    lora = config.lora
    saved = (
        "saved merged into the encoder (a plain model)"
        if run_config.get("merge_lora")
        else "saved as an adapter folder (adapters, projection, heads)"
    )
    return (
        f"LoRA adapters (r={lora['r']}, alpha={lora['alpha']:g}) in the encoder's {', '.join(lora['target_modules'])} "
        f"layers trained, the encoder's own weights frozen; {saved}"
    )


def _loss_description(config) -> str:
    extra = (
        f" + {config.matryoshka_self_distillation:g} × Matryoshka self-distillation"
        if config.matryoshka_dims and config.matryoshka_self_distillation
        else ""
    )
    if config.loss_weighting == "uncertainty":
        return "uncertainty-weighted sum of the task losses (learned, Kendall et al. 2018)" + extra
    return " + ".join(f"{task.loss_weight:g} × {task.name}" for task in config.task_specs) + extra


def _shown(key: str, value) -> str:
    if value is None:  # an unset layer-wise LR falls back to the base LR; other unset values mean "not used"
        return "= learning_rate" if key.endswith("_learning_rate") else "–"
    return str(value)
