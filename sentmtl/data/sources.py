"""Each task's data: where its rows come from, which columns hold its text and targets, and the one train / eval split.

Tasks whose `DataSpec` has the same data and text columns share one *source*: one dataset, one split, one batch for
all of them (the seed's Task A, Task B and distillation ride on the same corpus batches). Sources:

- `uci`: the UCI corpus (`--data_dir`, `--sources`, `--skip_bad_lines` apply);
- `{train_file: …, validation_file: …}`: CSV / TSV / JSON / JSONL / Parquet (`sentmtl.data.files.read_table`);
- `{stsb: folder}`: STS Benchmark sentence pairs (train from sts-train.csv, eval from sts-dev.csv);
- `{dataset: folder or name, train_split: train, eval_split: validation}`: a `datasets` dataset (`save_to_disk`
  folder, or a Hub name where the Hub is reachable).

A source without eval data of its own is split once, leak-free (`split.train_test_split`: near-duplicates of any of
its texts on one side), stratified by its first classification task; `max_samples` takes a stratified subset first.
Each task type reads its own target column and data options (`sentmtl.tasks.io.TaskIO`); an empty cell means "no target on this row".
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from ..model.task_spec import TaskSpec
from ..tasks.io import Readers, task_io
from . import columns
from .columns import TARGET_PREFIX, role_prefixes, table_columns  # noqa: F401 (TARGET_PREFIX: imported from here before)
from .corpus import load_sentiment_corpus
from .files import first_line, read_table
from .mining import add_mined_negatives
from .plan import RunTask
from .split import train_test_split
from .stsb import read_stsb, stsb_file
from .teacher_cache import VECTORS, teacher_vectors

logger = logging.getLogger(__name__)


@dataclass
class Source:
    """One dataset and the tasks it feeds: raw `text` (`text_pair`), `domain` and `target__<task>` columns.
    `domain_names[i]` names domain id i (the corpus's amazon / imdb / yelp); empty when the data names none."""

    name: str
    tasks: list[TaskSpec]
    train: datasets.Dataset | None
    eval: datasets.Dataset | None
    description: str = ""
    domain_names: list[str] = field(default_factory=list)
    batch_size: int | None = None  # per device; None: the run's
    batches_per_epoch: int | None = None  # None: what the sampling strategy gives it


def _raw_splits(data, data_args) -> tuple[datasets.DatasetDict, str, str, dict]:
    """(DatasetDict(train, test?), a short name, where it came from, {split: line of its first row} for files)."""
    if data == "uci":
        corpus = load_sentiment_corpus(
            data_args.data_dir, data_args.sources, on_bad_lines="skip" if data_args.skip_bad_lines else "error"
        )
        return datasets.DatasetDict({"train": corpus}), "uci", "UCI corpus", {}
    if "stsb" in data:
        train, dev = stsb_file(data["stsb"], "train"), stsb_file(data["stsb"], "dev")
        return (
            datasets.DatasetDict({"train": read_stsb(train), "test": read_stsb(dev)}),
            "stsb",
            f"STS-B ({train.parent})",
            {},
        )
    streaming = bool(data.get("streaming"))
    if "train_file" in data:
        files = {
            "train": data["train_file"],
            **({"test": data["validation_file"]} if data.get("validation_file") else {}),
        }
        # A streamed source streams its training rows only: evaluation needs a fixed table.
        out = {split: read_table(file, streaming=streaming and split == "train") for split, file in files.items()}
        return out, Path(data["train_file"]).stem, data["train_file"], {s: first_line(f) for s, f in files.items()}
    location = data["dataset"]
    on_disk = Path(location).exists()
    loaded = datasets.load_from_disk(location) if on_disk else datasets.load_dataset(location, streaming=streaming)
    train_split, eval_split = data.get("train_split", "train"), data.get("eval_split", "validation")
    for name in (train_split, data.get("eval_split")):
        if name is not None and name not in loaded:  # a named eval split that is missing is a typo, not "split it"
            raise ValueError(f"dataset {location}: no split {name!r} (splits: {list(loaded)}).")
    out = {"train": loaded[train_split]}
    if streaming and on_disk:
        out["train"] = out["train"].to_iterable_dataset()
    if eval_split in loaded:
        out["test"] = loaded[eval_split]
        if streaming and not on_disk:  # evaluation needs a fixed table: the eval split alone, read whole (loading
            # the dataset's split non-streamed would download and prepare every split, the train one included)
            stream = loaded[eval_split]
            out["test"] = datasets.Dataset.from_generator(lambda: (yield from stream), features=stream.features)
    return out, Path(location).name, location, {}


def _stsb_texts(folder) -> list[str]:
    table = read_stsb(stsb_file(folder, "train"))
    return [*table["sentence1"], *table["sentence2"]]


# The readers a task type may use for files of its own (`TaskIO.documents`).
READERS = Readers(table=read_table, stsb_texts=_stsb_texts)


def build_sources(
    run_tasks: list[RunTask], data_args, seed: int, teacher_for=None, prompt_for=None, miner_for=None
) -> list[Source]:
    """Group the tasks by their data, load each source once, give it its columns (distillation targets included,
    when `teacher_for(teacher name or None) -> Teacher` is given; prompted texts, when `prompt_for(spec, role) ->
    str` is: `table_columns`) and split it once. Mined hard negatives (`hard_negatives`) are added to the training
    rows last, by `miner_for(miner name or None) -> Miner` (`sentmtl.data.mining`)."""
    groups: dict[str, list[RunTask]] = {}
    for task in run_tasks:
        groups.setdefault(task.source_key(), []).append(task)
    sources, split_any = [], False
    for members in groups.values():
        spec = members[0].data
        splits, name, where, lines = _raw_splits(spec.data, data_args)
        train, domain_names = table_columns(
            splits["train"], members, f"{where} (train)", lines.get("train"), prompt_for=prompt_for
        )
        cache_dir = getattr(data_args, "teacher_cache_dir", None)
        if spec.streamed:
            train = stream_source(train, members, teacher_for, seed, getattr(data_args, "stream_buffer_size", 10_000))
        elif spec.max_samples is None:  # the whole table's vectors: another seed or test share reuses them
            train = add_teacher_targets(train, members, teacher_for, cache_dir)
        evaluation = None
        documents = [text for m in members for text in task_io(m.spec).documents(m, READERS)]
        if documents and "test" not in splits:
            raise ValueError(
                f"{where}: distractors are added to a source's own evaluation data; give it some "
                "(validation_file, stsb, or a dataset's eval_split)."
            )
        if "test" in splits:
            evaluation, domain_names = table_columns(
                splits["test"], members, f"{where} (eval)", lines.get("test"), domain_names, documents, prompt_for
            )
            evaluation = add_teacher_targets(evaluation, members, teacher_for, cache_dir)
        else:  # no eval data of its own: a leak-free split, stratified by the first classification task
            stratify = next((TARGET_PREFIX + m.spec.name for m in members if task_io(m.spec).stratify_by(m.spec)), None)
            # A hard negative must not sit on both sides either: `negatives` (a list per row) counts as text columns.
            texts = [c for c in ("text", "text_pair", "negatives") if c in train.column_names]
            split = train_test_split(
                train,
                data_args.split_test_size,
                seed,
                spec.max_samples,
                text_column=texts,
                label_column=stratify,
                source_column="domain",
                # A sentence prompted one way as an anchor and another as a positive is still one sentence.
                strip_prefixes=role_prefixes(members, prompt_for, where),
            )
            train, evaluation = split["train"], split["test"]
            if spec.max_samples is not None:  # a subset: only its rows are embedded (cached by their texts)
                train, evaluation = (
                    add_teacher_targets(t, members, teacher_for, cache_dir) for t in (train, evaluation)
                )
        evaluation = bounded(evaluation, getattr(data_args, "max_eval_samples", None), where)
        # A type may leave rows out of training (evaluation keeps them: a contrastive task's rows below min_score
        # are retrieval documents, not pairs). Tasks sharing the source keep a row when any of them trains on it;
        # each task's loss still skips the rows it has no target on.
        masks = [
            (m.spec.name, keep)
            for m in members
            if (keep := task_io(m.spec).training_rows(m, lambda t=train, c=TARGET_PREFIX + m.spec.name: t[c], where))
            is not None
        ]
        if masks:
            keep = np.logical_or.reduce([mask for _, mask in masks])
            if not keep.all():
                before, train = train.num_rows, train.select(np.flatnonzero(keep))
                names = ", ".join(repr(name) for name, _ in masks)
                logger.info(
                    "%s: training on %d of %d rows (the rows task(s) %s train on).",
                    where,
                    train.num_rows,
                    before,
                    names,
                )
        train = add_mined_negatives(train, members, miner_for, READERS, where, cache_dir, prompt_for, seed)
        sources.append(
            Source(
                name,
                [m.spec for m in members],
                train,
                evaluation,
                where,
                domain_names,
                spec.batch_size,
                spec.batches_per_epoch,
            )
        )
        split_any = split_any or "test" not in splits
    if data_args.test_size is not None and not split_any:
        raise ValueError(
            f"--test_size {data_args.test_size}: every source has evaluation data of its own, so nothing "
            "is split. Drop it."
        )
    taken = {}
    for source in sources:  # two sources from different files with the same stem stay apart
        taken[source.name] = taken.get(source.name, 0) + 1
        if taken[source.name] > 1:
            source.name = f"{source.name}{taken[source.name]}"
    return sources


def stream_source(
    stream: datasets.IterableDataset, members: list[RunTask], teacher_for, seed: int, buffer_size: int
) -> datasets.IterableDataset:
    """A streamed source's training rows: converted as they arrive (`table_columns`), shuffled through a buffer of
    `buffer_size` rows seeded by (seed, epoch) — the same order every time, which is what makes a resumed run exact —
    and, for a distillation task, its teacher's vectors computed batch by batch as the rows are read (a stream
    cannot be embedded ahead: `teacher_for` must give a frozen teacher, not the model being trained)."""
    stream = stream.shuffle(seed=seed, buffer_size=buffer_size)
    for member in members:
        request = task_io(member.spec).teacher(member)
        if teacher_for is not None and request is not None:
            teacher, column = teacher_for(request.name), TARGET_PREFIX + member.spec.name
            stream = stream.map(
                lambda batch, t=teacher, c=column: {c: list(t.encode(list(batch["text"])))},
                batched=True,
                batch_size=columns.STREAM_ROWS,
            )
    return stream


def bounded(dataset: datasets.Dataset | None, limit: int | None, where: str) -> datasets.Dataset | None:
    """At most `limit` rows of an evaluation table (`--max_eval_samples`): a random subset, in table order, the same
    whatever the run's seed (so runs of different seeds on one validation file are measured on the same rows). A
    contrastive task's retrieval corpus shrinks with it: its recall and MRR are not comparable to a full evaluation."""
    if dataset is None or limit is None or dataset.num_rows <= limit:
        return dataset
    keep = np.sort(np.random.default_rng(0).choice(dataset.num_rows, size=limit, replace=False))
    logger.info("%s: evaluating %d of its %d held-out rows (--max_eval_samples).", where, limit, dataset.num_rows)
    return dataset.select(keep)


def add_teacher_targets(
    table: datasets.Dataset, members: list[RunTask], teacher_for, cache_dir=None
) -> datasets.Dataset:
    """Distillation targets: for each distillation task, its teacher's pooled vector of every row's text, computed
    once before training and cached on disk (`sentmtl.data.teacher_cache`), so no second encoder runs per step and a
    second run on the same data reads them. `teacher_for(teacher name or None) -> Teacher`; None: no targets added."""
    if teacher_for is None:
        return table
    for member in members:
        request = task_io(member.spec).teacher(member)
        if request is not None:
            vectors = teacher_vectors(table, "text", teacher_for(request.name), cache_dir)
            table = datasets.concatenate_datasets(
                [table, vectors.rename_column(VECTORS, TARGET_PREFIX + member.spec.name)], axis=1
            )
    return table


__all__ = [
    "Source",
    "TARGET_PREFIX",
    "add_teacher_targets",
    "bounded",
    "build_sources",
    "stream_source",
    "table_columns",
]
