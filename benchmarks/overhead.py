#!/usr/bin/env python
"""Framework overhead, counted: the ATen ops sentmtl runs per training step and per `encode` batch against the plain
recipes on the same encoder, and the graph breaks `torch.compile` would meet in the model and every task type's loss.

    python benchmarks/overhead.py --data_dir ../shared/data/sentiment_labelled_sentences --output_dir results/overhead

1. Training ops. sentmtl's default run (its three default tasks, classification, sentiment score and distillation:
   `sentmtl.training.run.run`, the path run_mtl.py takes) against the Hugging Face docs' recipe (Trainer +
   AutoModelForSequenceClassification, DataCollatorWithPadding), on the same encoder and data, batch 16, the same
   max length, eager, fp32 and fused AdamW on both sides, the same logging cadence. torch.profiler records steps
   WARM … WARM+WINDOW−1 (default 10–19); the counts are top-level ATen ops per step (`top_level_ops`), and the same
   without the view and metadata ops that launch no GPU kernel (`VIEW_OPS`): the kernel-launching count.
2. Embedding ops: `sentmtl.encode` against `SentenceTransformer.encode` (Transformer + mean Pooling + Normalize, the
   encoder's own recipe) on the same encoder, both in fp32, the same sentences and batch size: ops per batch, the
   difference between a call of --embed_batches batches and a call of one (so each call's fixed cost drops out).
3. Graph breaks under torch.compile(dynamic=True), from `torch._dynamo.explain`, for each case of `GRAPH_CASES`: the
   model's forward, each task type's loss, a forward with prompts (the sequence-classification view inserting the
   prompt's ids) and a forward with LoRA adapters.

The encoder is a randomly initialised BERT of MiniLM's depth (6 layers) at width 32 (--layers, --width) with the
bundled all-MiniLM-L6-v2 tokenizer: op counts do not depend on the width, and a narrow model keeps the run to minutes
on a CPU. The data are the UCI corpus (--data_dir), or synthetic sentences in its layout without it.

The last three lines are `train_ops_ratio: X.XX` (kernel-launching ops per step, sentmtl ÷ plain),
`embed_ops_ratio: Y.YY` (kernel-launching ops per batch, sentmtl.encode ÷ SentenceTransformer.encode) and
`graph_breaks: N` (summed over the cases).
"""

import argparse
import functools
import json
import logging
import random
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# Ops that only make a new view of a tensor or read its metadata: on a GPU they launch no kernel.
VIEW_OPS = frozenset(
    "t reshape view _unsafe_view detach transpose permute expand unsqueeze squeeze select slice as_strided alias".split()
)
# Ops that read a device tensor back to the host (`.item()`, `bool(t)`, `int(t)`: `_local_scalar_dense`) or whose
# output's shape depends on the data (`nonzero`, boolean indexing): on a GPU each waits for the queued kernels.
HOST_READ_OPS = frozenset({"aten::_local_scalar_dense", "aten::nonzero"})
# Ops whose CPU kernels read their own scalars (the fused AdamW's step count, per parameter); their CUDA kernels do not.
CPU_KERNEL_READS = frozenset({"aten::_fused_adamw_", "aten::_fused_adam_"})
# Annotations whose ops are data loading (the collator's tensors, built on the CPU before the step moves them):
# reported apart, not counted in the step. torch's DataLoader wraps its `__next__` in this record_function.
DATA_LOADING = "enumerate(DataLoader)"
STEP_MARK = "overhead::step_"  # the annotation around each profiled training step
LOGGING_STEPS = 50  # both training paths log at the same cadence, outside the window (sentmtl's own default is 10)
MAX_LENGTH = 128  # both paths truncate here (the corpus's longest sentence is ~100 tokens)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data_dir",
        default=None,
        help="The UCI corpus folder (or zip), used by both training paths and for the sentences embedded. "
        "Default: synthetic sentences written in the corpus's layout.",
    )
    parser.add_argument("--layers", type=int, default=6, help="Encoder layers (MiniLM's depth: 6).")
    parser.add_argument("--width", type=int, default=32, help="Encoder width (hidden size; 4 heads, FFN 4× wide).")
    parser.add_argument("--batch_size", type=int, default=16, help="Training batch size (both paths).")
    parser.add_argument(
        "--steps",
        nargs=2,
        type=int,
        default=(10, 10),
        metavar=("WARM", "WINDOW"),
        help="Profile training steps WARM … WARM+WINDOW−1 (0-based; default 10 10: steps 10–19).",
    )
    parser.add_argument("--embed_batch_size", type=int, default=32, help="Embedding batch size (both paths).")
    parser.add_argument(
        "--embed_batches",
        type=int,
        default=8,
        help="Batches in the profiled encode call (ops per batch: its count minus a one-batch call's, ÷ one less).",
    )
    parser.add_argument("--top", type=int, default=8, help="Top op names shown beside each count.")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        metavar="CASE",
        help="Graph-break cases to run (default: all): " + ", ".join(GRAPH_CASES) + "; `none` for no graph breaks.",
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="A quick check: 2 layers, steps 2–3, 3 embedding batches of 4, two graph-break cases unless --cases.",
    )
    parser.add_argument("--seed", type=int, default=42, help="Split and initialisation seed.")
    parser.add_argument(
        "--output_dir",
        default=None,
        help="Where overhead.md and summary.json go (e.g. results/overhead); none: print only.",
    )
    parser.add_argument(
        "--record_change",
        default=None,
        metavar="TEXT",
        help="Append a row for this change to OUTPUT_DIR/changes.md (the table of what each change did to the "
        "counts; needs --output_dir): TEXT names the change.",
    )
    parser.add_argument(
        "--loss_drift",
        default="–",
        help="With --record_change: the largest relative difference between the default tasks' training loss and "
        "its plain reference over 50 steps, as tests/model/test_losses.py prints it (pytest -s).",
    )
    args = parser.parse_args(argv)
    if args.small:
        args.layers, args.steps, args.embed_batch_size, args.embed_batches = 2, (2, 2), 4, 3
        args.cases = args.cases or ["loss_classification", "forward_prompts"]
    if args.record_change and not args.output_dir:
        parser.error("--record_change appends to OUTPUT_DIR/changes.md: give --output_dir.")
    unknown = sorted(set(args.cases or ()) - set(GRAPH_CASES) - {"none"})
    if unknown:
        parser.error(f"--cases {' '.join(unknown)}: not a case; choose from {', '.join(GRAPH_CASES)} or none.")
    if args.width % 4:
        parser.error(f"--width {args.width}: the encoder has 4 heads; give a multiple of 4 (e.g. 32).")
    if args.steps[0] < 1 or args.steps[1] < 1:
        parser.error(f"--steps {args.steps[0]} {args.steps[1]}: WARM and WINDOW must be >= 1.")
    if args.embed_batches < 2:
        parser.error(f"--embed_batches {args.embed_batches} must be >= 2 (a one-batch call is subtracted).")
    return args


# -- counting ---------------------------------------------------------------------------------------------------------


def top_level_events(events, skip_under: tuple[str, ...] = ()) -> list:
    """The ATen ops in a profile that no other ATen op encloses (`aten::linear`, not again the `aten::t` and
    `aten::addmm` it calls). Backward ops are in: the autograd engine's nodes that enclose them are not ATen ops. Ops
    under an annotation starting with one of `skip_under` are left out."""
    found = []
    for event in events:
        if not event.name.startswith("aten::"):
            continue
        parent, nested = event.cpu_parent, False
        while parent is not None and not nested:
            nested = parent.name.startswith("aten::") or parent.name.startswith(skip_under or ("\0",))
            parent = parent.cpu_parent
        if not nested:
            found.append(event)
    return found


def top_level_ops(events, skip_under: tuple[str, ...] = ()) -> Counter:
    """{op name: count} of `top_level_events`."""
    return Counter(event.name.removeprefix("aten::") for event in top_level_events(events, skip_under))


@functools.cache
def is_composite(name: str) -> bool:
    """Whether every overload of the ATen op is CompositeImplicitAutograd: made of other ops, none of its own."""
    import torch

    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return False
    verdicts = []
    for overload in packet.overloads():
        try:  # TorchScript's own overloads (`to.prim_Device`) are not the dispatcher's
            verdicts.append(
                torch._C._dispatch_has_kernel_for_dispatch_key(
                    f"aten::{name}" if overload == "default" else f"aten::{name}.{overload}",
                    "CompositeImplicitAutograd",
                )
            )
        except RuntimeError:
            continue
    return bool(verdicts) and all(verdicts)


def launches_nothing(event) -> bool:
    """A composite op that called no op but views and composites: `.float()` of a float32 tensor, dropout in eval
    mode, `contiguous()` of a contiguous tensor. Counted as kernel-launching (the method's rule), shown apart."""
    return all(
        e.name.removeprefix("aten::") in VIEW_OPS or is_composite(e.name.removeprefix("aten::"))
        for e in subtree(event)
        if e.name.startswith("aten::")
    )


def idle_ops(events, skip_under: tuple[str, ...] = ()) -> Counter:
    """{op name: count} of the top-level ops, views aside, that launched nothing (`launches_nothing`)."""
    return Counter(
        e.name.removeprefix("aten::")
        for e in top_level_events(events, skip_under)
        if e.name.removeprefix("aten::") not in VIEW_OPS and launches_nothing(e)
    )


def subtree(event) -> list:
    """`event` and every event under it (the profiler's tree: `cpu_children`)."""
    found, stack = [], [event]
    while stack:
        found.append(stack.pop())
        stack.extend(found[-1].cpu_children)
    return found


def kernel_ops(counts: Counter) -> Counter:
    """The counts without the view and metadata ops (`VIEW_OPS`)."""
    return Counter({name: n for name, n in counts.items() if name not in VIEW_OPS})


def profiled(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` under torch.profiler (CPU activity): (its result, the profile's events)."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        result = fn(*args, **kwargs)
    return result, profiler.events()


def host_reads(events, skip_under: tuple[str, ...] = ()) -> int:
    """How many times the ops read a tensor back to the host (`HOST_READ_OPS`, at any depth: `bool(t)` is an
    `is_nonzero` that calls `item`, which calls `_local_scalar_dense`); none under `skip_under` annotations, nor
    inside an op whose CPU kernel alone reads (`CPU_KERNEL_READS`)."""
    count = 0
    for event in events:
        if event.name not in HOST_READ_OPS:
            continue
        parent = event.cpu_parent
        while parent is not None and not (
            parent.name.startswith(skip_under or ("\0",)) or parent.name in CPU_KERNEL_READS
        ):
            parent = parent.cpu_parent
        count += parent is None
    return count


def per_unit(counts: Counter, units: int) -> dict:
    return {name: n / units for name, n in counts.most_common()}


# -- the encoder and the data -----------------------------------------------------------------------------------------


def tiny_encoder(folder: Path, layers: int, width: int, seed: int) -> Path:
    """A random BERT with the bundled encoder's config but `layers` × `width` (4 heads, FFN 4× wide, as MiniLM's),
    saved with the bundled tokenizer: what both sides of every comparison load."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from sentmtl.model.encoders import bundled_encoder_path

    bundled = bundled_encoder_path()
    config = BertConfig.from_pretrained(bundled)
    config.update({"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": 4})
    config.intermediate_size = 4 * width
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(bundled).save_pretrained(folder)
    return folder


# Synthetic sentences: words of review language in random orders, 4 to 24 of them.
_WORDS = (
    "the a this that it was is not very really quite so too phone film movie food service place battery plot acting "
    "story screen sound price staff waiter music ending case charger good great bad awful excellent terrible "
    "wonderful boring fine poor best worst love hate recommend avoid again never always and but or with for"
).split()


def synthetic_corpus(folder: Path, per_file: int, seed: int) -> Path:
    """`per_file` labelled sentences in each of the corpus's three files (its layout: `sentence<TAB>label`)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for file in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        lines = [f"{' '.join(rng.choices(_WORDS, k=rng.randint(4, 24)))} .\t{i % 2}" for i in range(per_file)]
        (folder / file).write_text("\n".join(lines) + "\n")
    return folder


def corpus_sentences(data_dir) -> list[str]:
    from sentmtl.data.corpus import load_sentiment_corpus

    return list(load_sentiment_corpus(data_dir)["sentence"])


# -- training: the profiled step window ---------------------------------------------------------------------------------


class WindowDone(Exception):
    """Raised by the window's callback after its last step: nothing after the window is measured or needed."""


def op_window(warm: int, window: int):
    """A TrainerCallback that profiles from the end of step WARM−1 (global_step WARM) to the end of step
    WARM+WINDOW−1: WINDOW whole steps, each with its data fetch, forward, backward, clipping, optimizer and scheduler
    steps and the other callbacks' step-end hooks. Then it stops the run (`WindowDone`)."""
    import torch
    from transformers import TrainerCallback

    class OpWindow(TrainerCallback):
        def __init__(self):
            self.profiler, self.step, self.steps, self.idle, self.data_loading = None, None, None, None, None
            self.host_reads = None

        def on_step_end(self, args, state, control, **kwargs):
            if self.step is not None:
                self.step.__exit__(None, None, None)
            if state.global_step == warm:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.__enter__()
            elif state.global_step == warm + window:
                self.profiler.__exit__(None, None, None)
                events = self.profiler.events()
                # Each step's ops sit under its own annotation (opened below): one count per step.
                marks = [e for e in events if e.name.startswith(STEP_MARK)]
                self.steps = [top_level_ops(subtree(mark), skip_under=(DATA_LOADING,)) for mark in marks]
                self.idle = [idle_ops(subtree(mark), skip_under=(DATA_LOADING,)) for mark in marks]
                self.host_reads = [host_reads(subtree(mark), skip_under=(DATA_LOADING,)) for mark in marks]
                self.data_loading = top_level_ops(events) - sum(self.steps, Counter())
                raise WindowDone
            if self.profiler is not None:
                self.step = torch.profiler.record_function(f"{STEP_MARK}{state.global_step}")
                self.step.__enter__()

    return OpWindow()


def _windowed(train, window_callback) -> dict:
    try:
        train()
    except WindowDone:
        pass
    if window_callback.steps is None:
        raise RuntimeError("training ended before the profiled window: raise the data or lower --steps.")
    return {
        "steps": window_callback.steps,
        "idle": window_callback.idle,
        "data_loading": window_callback.data_loading,
        "host_reads": window_callback.host_reads,
    }


def train_plain(data_dir, encoder, batch_size, warm, window, seed, output_dir) -> dict:
    """The docs' recipe: AutoModelForSequenceClassification + Trainer, DataCollatorWithPadding, fp32, fused AdamW."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from sentmtl.data.corpus import load_sentiment_corpus, train_test_split

    set_seed(seed)
    splits = train_test_split(load_sentiment_corpus(data_dir), 0.2, seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=2)
    columns = ["input_ids", "attention_mask", "token_type_ids", "label"]
    train = splits["train"].map(
        lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=MAX_LENGTH), batched=True
    )
    callback = op_window(warm, window)
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=warm + window + 1,
        per_device_train_batch_size=batch_size,
        learning_rate=5e-5,
        optim="adamw_torch_fused",
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=LOGGING_STEPS,
        seed=seed,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train.select_columns(columns),
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[callback],
    )
    return _windowed(trainer.train, callback)


def train_sentmtl(data_dir, encoder, batch_size, warm, window, seed, output_dir) -> dict:
    """run_mtl.py's default run (`sentmtl.training.run.run`, its default tasks and batches), fp32, fused AdamW."""
    from sentmtl.training.run import parse_args as run_parse_args
    from sentmtl.training.run import run

    flags = {
        "data_dir": data_dir,
        "model_name_or_path": encoder,
        "output_dir": output_dir,
        "teacher_cache_dir": f"{output_dir}/teacher_cache",
        "max_steps": warm + window + 1,
        "per_device_train_batch_size": batch_size,
        "max_length": MAX_LENGTH,
        "bf16": "false",
        "optim": "adamw_torch_fused",
        "eval_strategy": "no",
        "report_to": "none",
        "use_cpu": "true",
        "disable_tqdm": "true",
        "logging_steps": LOGGING_STEPS,
        "seed": seed,
    }
    arguments = run_parse_args([part for name, value in flags.items() for part in (f"--{name}", str(value))])
    callback = op_window(warm, window)
    return _windowed(lambda: run(*arguments, callbacks=[callback]), callback)


# -- embedding ----------------------------------------------------------------------------------------------------------


def embed_counts(encoder, sentences, batch_size, batches, seed) -> dict:
    """Ops per batch of `sentmtl.encode` and `SentenceTransformer.encode` on the same encoder, both fp32: a call of
    `batches` batches minus a call of one, ÷ (batches − 1); each path warmed up by one call first."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer

    import sentmtl

    torch.manual_seed(seed)
    model = sentmtl.SentMtlModel.from_encoder(encoder)  # the default config: mean pooling, 256-d projection
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    transformer = models.Transformer(encoder, max_seq_length=MAX_LENGTH)
    st_model = SentenceTransformer(
        modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), "mean"), models.Normalize()],
        device="cpu",
    )
    paths = {
        "sentmtl": lambda texts: sentmtl.encode(
            model,
            texts,
            tokenizer,
            batch_size=batch_size,
            max_length=MAX_LENGTH,
            precision="fp32",
            show_progress_bar=False,
        ),
        "sentence_transformers": lambda texts: st_model.encode(texts, batch_size=batch_size, show_progress_bar=False),
    }
    texts = sentences[: batch_size * batches]
    if len(texts) < batch_size * batches:
        raise ValueError(f"{len(sentences)} sentences: fewer than {batches} batches of {batch_size}.")
    out = {}
    for name, encode in paths.items():
        encode(texts)
        _, many = profiled(encode, texts)
        _, one = profiled(encode, texts[:batch_size])
        marginal = _per_batch(top_level_ops(many), top_level_ops(one), name)
        idle = _per_batch(idle_ops(many), idle_ops(one), name)
        out[name] = {
            "per_batch": per_unit(marginal, batches - 1),
            "idle_per_batch": per_unit(idle, batches - 1),
            "per_call": dict(top_level_ops(one) - marginal),
        }
    return out


def _per_batch(many: Counter, one: Counter, name: str) -> Counter:
    """The ops a call of several batches has beyond a call of one; a Counter difference would drop negative counts,
    so they are checked: nothing a call does once may shrink with more batches."""
    marginal = Counter({op: many[op] - one[op] for op in many | one})
    if any(n < 0 for n in marginal.values()):
        raise RuntimeError(f"{name}: ops fewer with more batches: {dict(marginal)}")
    return +marginal


# -- graph breaks -------------------------------------------------------------------------------------------------------


def _tiny_model(encoder, **config):
    import sentmtl

    return sentmtl.SentMtlModel.from_encoder(encoder, **config)


def _batch(tokenizer, n=4):
    texts = [" ".join(_WORDS[i : 2 * i + 3]) for i in range(n)]  # 3, 4, 5, 6 words: padding in the batch
    return tokenizer(texts, padding=True, return_tensors="pt")


def _default_inputs(model, tokenizer) -> dict:
    """A batch of 4 sentences with the default tasks' targets (class ids, scores, teacher vectors), each on every
    row, and `complete_tasks` naming them as the collator would (the task types' losses with a mask: `loss_*`)."""
    import torch

    batch = _batch(tokenizer)
    n = len(batch["input_ids"])
    labels = {
        "classification": torch.tensor([0, 1] * (n // 2)),
        "sentiment": torch.rand(n),
        "distillation": torch.randn(n, model.config.hidden_size),
    }
    return {**batch, "task_labels": labels, "complete_tasks": tuple(labels)}


def _default_forward(encoder, tokenizer, **config):
    """The training forward of the default run's model (its three tasks, their losses), `config` added."""
    from sentmtl.model.task_spec import default_tasks

    model = _tiny_model(encoder, tasks=default_tasks(distillation_weight=10.0), **config).train()
    return model, _default_inputs(model, tokenizer)


def _loss_case(type_name):
    """A task type's loss on a batch of 6 rows of made-up outputs and targets in the type's layout."""

    def build(encoder, tokenizer):
        import torch

        from sentmtl.model.task_spec import TaskSpec

        n, size = 6, 16
        labels = ["a", "b", "c"] if type_name in ("classification", "multilabel") else None
        spec = TaskSpec("task", type_name, labels=labels)
        layouts = {
            "classification": (torch.randn(n, 3), torch.tensor([0, 1, 2, -100, 1, 0])),
            "multilabel": (torch.randn(n, 3), torch.randint(0, 2, (n, 3)).float()),
            "score": (torch.randn(n), torch.rand(n)),
            "regression": (torch.randn(n), torch.randn(n)),
            "similarity": (torch.rand(n) * 2 - 1, torch.rand(n)),
            # anchor, positive and one hard negative per row; targets [flag, anchor id, positive id, negative id]
            "contrastive": (
                torch.nn.functional.normalize(torch.randn(n, 3, size), dim=-1),
                torch.stack([torch.ones(n), torch.arange(n), n + torch.arange(n), 2 * n + torch.arange(n)], 1).long(),
            ),
            "distillation": (torch.randn(n, size), torch.randn(n, 2 * size)),
        }
        output, targets = layouts[type_name]
        output.requires_grad_(True)
        return (lambda o, t: spec.kind.loss(spec, o, t)), {"o": output, "t": targets}

    return build


def _prompt_forward(encoder, tokenizer):
    """The sequence-classification view of a model with prompts whose classification task takes one: its forward
    inserts the prompt's token ids into rows that lack them (`prompts.with_pipeline_prompt`)."""
    from sentmtl.model.modeling_sentmtl import SentMtlForSequenceClassification
    from sentmtl.model.task_spec import default_tasks

    tasks = default_tasks()
    tasks[0].prompt = "query"
    model = _tiny_model(encoder, tasks=tasks, prompts={"query": "query:", "passage": "passage:"})
    model.config.set_prompt_token_ids(tokenizer)
    view = SentMtlForSequenceClassification(model.config)
    view.sentmtl.load_state_dict(model.state_dict())
    return view.eval(), dict(_batch(tokenizer))


def _lora_forward(encoder, tokenizer):
    return _default_forward(encoder, tokenizer, lora={"r": 4})


# name: a builder (encoder folder, tokenizer) → (a callable, its keyword arguments)
GRAPH_CASES = {
    "forward_default_tasks": _default_forward,
    **{
        f"loss_{name}": _loss_case(name)
        for name in ("classification", "multilabel", "score", "regression", "similarity", "contrastive", "distillation")
    },
    "forward_prompts": _prompt_forward,
    "forward_lora": _lora_forward,
}


def graph_breaks(name, encoder, tokenizer) -> dict:
    """The graph breaks of one case under torch.compile(dynamic=True): explain's count, the distinct reasons, and
    the functions dynamo gave up on (a break inside a loop: the whole function runs in eager)."""
    import torch
    from torch._dynamo.utils import counters

    fn, kwargs = GRAPH_CASES[name](encoder, tokenizer)
    counters.clear()  # explain resets dynamo's caches, not its counters
    with torch._dynamo.config.patch(assume_static_by_default=False):
        explained = torch._dynamo.explain(fn)(**kwargs)
    reasons = []
    for reason in explained.break_reasons:
        frame = reason.user_stack[-1] if reason.user_stack else None
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"
        # The reason's first part: what broke (dynamo appends hints and a developer context).
        text = " ".join(str(reason.reason).split())
        for cut in (" Hint:", " Developer debug context:"):
            text = text.split(cut)[0]
        text = f"{text[:300]} ({where})"
        if text not in reasons:
            reasons.append(text)
    skipped = sorted(
        {
            f"{function} ({Path(file).name}:{line})"
            for message in counters["unimplemented"]
            for function, file, line in re.findall(r"frame skipped: (\S+) \((.+?) line (\d+)\)", message)
        }
    )
    reasons += [f"then runs in eager: {frame}" for frame in skipped]
    breaks = max(explained.graph_break_count, 0)
    return {"graphs": explained.graph_count, "breaks": breaks, "reasons": reasons, "eager_functions": skipped}


# -- the report ---------------------------------------------------------------------------------------------------------


def top_names(counts: dict, top: int) -> str:
    items = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return ", ".join(f"`{name}` {n:g}" for name, n in items)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


TRAIN_LABELS = {"plain": "Trainer + AutoModelForSequenceClassification", "sentmtl": "sentmtl default run (3 tasks)"}
EMBED_LABELS = {"sentmtl": "sentmtl.encode", "sentence_transformers": "SentenceTransformer.encode"}


def train_section(args, train) -> tuple[list[str], dict]:
    """The training tables, and per path: ops per step by name, kernel-launching ones, each step's kernel count."""
    warm, window = args.steps
    rows = {}
    for name, side in train.items():
        total = sum(side["steps"], Counter())
        rows[name] = {
            "ops_per_step": per_unit(total, window),
            "kernel_per_step": per_unit(kernel_ops(total), window),
            "kernel_each_step": [sum(kernel_ops(step).values()) for step in side["steps"]],
            "idle_per_step": per_unit(sum(side["idle"], Counter()), window),
            "data_loading_per_step": per_unit(side["data_loading"], window),
            "host_reads_per_step": sum(side["host_reads"]) / window,
        }
    kernel = {name: row["kernel_per_step"] for name, row in rows.items()}
    ratio = sum(kernel["sentmtl"].values()) / sum(kernel["plain"].values())
    working = {name: sum(kernel[name].values()) - sum(row["idle_per_step"].values()) for name, row in rows.items()}
    lines = [
        f"Training: top-level ATen ops per step over steps {warm}–{warm + window - 1}, batch {args.batch_size}, "
        f"max length {MAX_LENGTH}, eager fp32, fused AdamW, logging every {LOGGING_STEPS} steps on both; "
        "kernel-launching: without the view and metadata ops; of which idle: composite ops that called nothing "
        "but views (`.float()` of a float32 tensor, eval-mode dropout), counted in by the method's rule. Steps "
        "differ where a batch has no padding (no attention mask is built). The collator's ops (CPU tensors, "
        "inside the DataLoader) are counted apart. Host reads: ops that read a tensor back to the host (`.item()`, "
        "`bool(t)`) or size their output by the data (`nonzero`), at any depth: on a GPU each waits for the queue.",
        "",
        "| path | ops / step | kernel-launching / step | of which idle | per step (min–max) | host reads / step "
        "| collator / step | top kernel-launching ops |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, label in TRAIN_LABELS.items():
        row, each = rows[name], rows[name]["kernel_each_step"]
        lines.append(
            f"| {label} | {sum(row['ops_per_step'].values()):,.1f} | {sum(kernel[name].values()):,.1f} | "
            f"{sum(row['idle_per_step'].values()):g} | {min(each):,}–{max(each):,} | "
            f"{row['host_reads_per_step']:g} | {sum(row['data_loading_per_step'].values()):g} | "
            f"{top_names(kernel[name], args.top)} |"
        )
    lines += [
        "",
        f"sentmtl ÷ plain, kernel-launching ops per step: {ratio:.2f} (without the idle ones: "
        f"{working['sentmtl']:,.1f} ÷ {working['plain']:,.1f} = {working['sentmtl'] / working['plain']:.2f})",
        "",
    ]
    lines += ["| op | plain / step | sentmtl / step | difference |", "| --- | ---: | ---: | ---: |"]
    gaps = sorted(
        kernel["plain"].keys() | kernel["sentmtl"].keys(),
        key=lambda op: (-abs(kernel["sentmtl"].get(op, 0) - kernel["plain"].get(op, 0)), op),
    )
    for op in gaps[: 2 * args.top]:
        a, b = kernel["plain"].get(op, 0), kernel["sentmtl"].get(op, 0)
        lines.append(f"| `{op}` | {a:g} | {b:g} | {b - a:+g} |")
    return lines + [""], {"paths": rows, "ratio": ratio}


def embed_section(args, embed) -> tuple[list[str], dict]:
    kernel = {name: per_unit(kernel_ops(Counter(side["per_batch"])), 1) for name, side in embed.items()}
    ratio = sum(kernel["sentmtl"].values()) / sum(kernel["sentence_transformers"].values())
    lines = [
        f"Embedding: top-level ATen ops per batch of {args.embed_batch_size} (a call of {args.embed_batches} "
        "batches minus a call of one), fp32 on both; fixed per call: the one-batch call's ops beyond a batch.",
        "",
        "| path | ops / batch | kernel-launching / batch | of which idle | fixed per call | top kernel-launching ops |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, label in EMBED_LABELS.items():
        side = embed[name]
        lines.append(
            f"| {label} | {sum(side['per_batch'].values()):g} | {sum(kernel[name].values()):g} | "
            f"{sum(side['idle_per_batch'].values()):g} | {sum(side['per_call'].values()):g} | "
            f"{top_names(kernel[name], args.top)} |"
        )
    lines += ["", f"sentmtl.encode ÷ SentenceTransformer.encode, kernel-launching ops per batch: {ratio:.2f}", ""]
    paths = {name: {**side, "kernel_per_batch": kernel[name]} for name, side in embed.items()}
    return lines, {"paths": paths, "ratio": ratio}


def breaks_section(breaks) -> list[str]:
    lines = [
        "Graph breaks under torch.compile(dynamic=True) (`torch._dynamo.explain`; a break inside a loop makes dynamo "
        "give up on the whole function, which then runs in eager: later breaks there are not seen):",
        "",
        "| case | graphs | breaks | reasons |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, case in breaks.items():
        reasons = "<br>".join(_cell(reason) for reason in case["reasons"]) or "–"
        lines.append(f"| {name} | {case['graphs']} | {case['breaks']} | {reasons} |")
    return lines + [""]


def report(args, train, embed, breaks, setup) -> tuple[str, dict]:
    """The Markdown tables and the summary (per-op counts)."""
    train_lines, train_summary = train_section(args, train)
    embed_lines, embed_summary = embed_section(args, embed)
    lines = [f"# Framework overhead ({setup['data']}; encoder {setup['encoder']})", ""]
    lines += train_lines + embed_lines + breaks_section(breaks)
    summary = {
        "setup": setup,
        "arguments": vars(args),
        "train": train_summary["paths"],
        "embed": embed_summary["paths"],
        "graph_breaks": breaks,
        "train_ops_ratio": train_summary["ratio"],
        "embed_ops_ratio": embed_summary["ratio"],
        "graph_breaks_total": sum(case["breaks"] for case in breaks.values()),
    }
    return "\n".join(lines), summary


CHANGES_INTRO = """# Overhead, change by change (issue 33, part 2)

One row per change, appended by `benchmarks/overhead.py --record_change TEXT` run on the tree with that change (the
commit that adds the row; `git log -p results/overhead/changes.md` pairs them): sentmtl's default run (3 tasks)
against the plain Trainer recipe, kernel-launching ops per training step (of which idle: composites that launched
nothing), host reads per step, the encode ratio, the graph breaks over the cases run, and the largest relative
difference between the default tasks' loss and its plain reference over 50 training steps of a tiny model
(`tests/model/test_losses.py`, its printed figure: each change keeps it within 1e-5).
"""
CHANGES_COLUMNS = (
    "change",
    "sentmtl kernel-launching / step",
    "of which idle",
    "host reads / step",
    "plain / step",
    "train_ops_ratio",
    "embed_ops_ratio",
    "graph breaks",
    "loss drift (50 steps)",
)


def record_change(path: Path, change: str, summary: dict, loss_drift: str) -> str:
    """Append the row of `change` to the changes table at `path` (written with its header the first time)."""
    train = summary["train"]
    kernel = {name: sum(train[name]["kernel_per_step"].values()) for name in TRAIN_LABELS}
    cases = summary["arguments"]["cases"]
    breaks = summary["graph_breaks_total"]
    if cases is not None:
        run = [case for case in cases if case != "none"]
        breaks = f"{breaks} ({len(run)} of {len(GRAPH_CASES)} cases)" if run else "not run"
    row = (
        f"| {_cell(change)} | {kernel['sentmtl']:,.1f} | {sum(train['sentmtl']['idle_per_step'].values()):g} | "
        f"{train['sentmtl']['host_reads_per_step']:g} | {kernel['plain']:,.1f} | {summary['train_ops_ratio']:.3f} | "
        f"{summary['embed_ops_ratio']:.2f} | {breaks} | {loss_drift} |"
    )
    header = f"| {' | '.join(CHANGES_COLUMNS)} |\n| --- |{' ---: |' * (len(CHANGES_COLUMNS) - 1)}\n"
    text = path.read_text() if path.is_file() else f"{CHANGES_INTRO}\n{header}"
    path.write_text(text + row + "\n")
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.getLogger("sentmtl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import datasets
    import torch
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    started = time.perf_counter()
    warm, window = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = str(tiny_encoder(tmp / "encoder", args.layers, args.width, args.seed))
        if args.data_dir:
            data_dir, data = str(Path(args.data_dir).resolve()), f"the UCI corpus ({Path(args.data_dir).name})"
        else:
            per_file = 100 if args.small else 1000
            data_dir = str(synthetic_corpus(tmp / "corpus", per_file, args.seed))
            data = f"synthetic sentences, {3 * per_file:,} in the corpus's layout"
        setup = {
            "data": data,
            "encoder": f"random BERT, {args.layers} layers × width {args.width}, bundled MiniLM tokenizer",
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
        }
        print(f"{data}; {setup['encoder']}; torch {torch.__version__}", flush=True)
        common = dict(data_dir=data_dir, encoder=encoder, batch_size=args.batch_size, warm=warm, window=window)
        train = {
            "plain": train_plain(**common, seed=args.seed, output_dir=str(tmp / "plain")),
            "sentmtl": train_sentmtl(**common, seed=args.seed, output_dir=str(tmp / "sentmtl")),
        }
        print(f"training windows profiled ({time.perf_counter() - started:.0f} s)", flush=True)
        sentences = corpus_sentences(data_dir)
        random.Random(args.seed).shuffle(sentences)
        embed = embed_counts(encoder, sentences, args.embed_batch_size, args.embed_batches, args.seed)
        print(f"encode calls profiled ({time.perf_counter() - started:.0f} s)", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        cases = list(GRAPH_CASES) if args.cases is None else [c for c in args.cases if c != "none"]
        breaks = {name: graph_breaks(name, encoder, tokenizer) for name in cases}
    text, summary = report(args, train, embed, breaks, setup)
    summary["wall_s"] = time.perf_counter() - started
    print()
    print(text)
    if args.output_dir:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "overhead.md").write_text(text + "\n")
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {output_dir / 'overhead.md'} and {output_dir / 'summary.json'}")
        if args.record_change:
            print(
                f"added to {output_dir / 'changes.md'}: {record_change(output_dir / 'changes.md', args.record_change, summary, args.loss_drift)}"
            )
    print(f"wall time {summary['wall_s']:.0f} s")
    print(f"train_ops_ratio: {summary['train_ops_ratio']:.2f}")
    print(f"embed_ops_ratio: {summary['embed_ops_ratio']:.2f}")
    print(f"graph_breaks: {summary['graph_breaks_total']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
