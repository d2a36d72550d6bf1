"""From task columns to batches: tokenisation, the sources side by side, and the collator.

The one way rows reach the model, for `run_mtl.py` and for users who build `SentMtlTrainer` in Python on their own
`datasets` table (`prepare`):

    train = prepare(my_table, model.tasks, tokenizer, label_columns={"classification": "label", "sentiment": "score"})
    SentMtlTrainer(model=model, args=args, train_dataset=train, eval_dataset=prepare(my_eval_table, ...),
                   processing_class=tokenizer).train()
"""

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from transformers import PreTrainedTokenizerBase

from ..model.prompts import check_prompt_room
from ..model.task_spec import TaskSpec
from ..tasks.io import task_io
from ..utils.fingerprints import combine, tokenizer_fingerprint
from . import columns
from .columns import TARGET_PREFIX, role_prefixes, table_columns
from .files import NO_SOURCE
from .plan import DataSpec, RunTask


def tokenize_source(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.Dataset:
    """`text` (`text_pair`, `negatives`) → input_ids, attention_mask (…), pair_input_ids, … and negative_input_ids, …
    (a list of k token lists per row); targets and domain kept."""

    def tokenize(batch):
        encoded = dict(tokenizer(batch["text"], truncation=True, max_length=max_length))
        if "text_pair" in batch:
            pair = tokenizer(batch["text_pair"], truncation=True, max_length=max_length)
            encoded.update({f"pair_{key}": value for key, value in pair.items()})
        if "negatives" in batch:
            k = len(batch["negatives"][0])
            flat = tokenizer(
                [text for row in batch["negatives"] for text in row], truncation=True, max_length=max_length
            )
            encoded.update(
                {f"negative_{key}": [value[i : i + k] for i in range(0, len(value), k)] for key, value in flat.items()}
            )
        return encoded

    if isinstance(dataset, datasets.IterableDataset):  # tokenised as the rows arrive
        texts = [c for c in ("text", "text_pair", "negatives") if c in (dataset.column_names or ["text"])]
        return dataset.map(tokenize, batched=True, batch_size=columns.STREAM_ROWS, remove_columns=texts)
    texts = [c for c in ("text", "text_pair", "negatives") if c in dataset.column_names]
    identity = (tokenizer_fingerprint(tokenizer), max_length)

    def tokenized(table, fingerprint):
        # Keyed by what decides the tokens (not by hashing this closure: a called tokenizer hashes differently), so a
        # second run on the same table reads the tokenised cache file.
        return table.map(
            tokenize,
            batched=True,
            remove_columns=texts,
            desc="Tokenising",
            new_fingerprint=combine("tokenize", 1, fingerprint, *identity),
        )

    # Teacher vectors (fixed-length float columns) are the bulk of a table: a map would read every one of them to
    # copy it into the tokenised file (each page then counts in the process's memory). Tokenise the other columns and
    # put the vector columns back beside them, memory-mapped where they lie. A split's selection of rows is applied
    # after that, to the whole table's tokens (computed once, cached, for both sides of the split).
    vectors = [name for name, feature in dataset.features.items() if _is_vector(feature)]
    if not vectors:
        return tokenized(dataset, dataset._fingerprint)
    if dataset._indices is None:
        base, rows = dataset, None
    else:  # a selection (the split, --max_eval_samples): the table under it, named by the file blocks it is made of
        key = _mapped_table_key(dataset.data)
        if key is None:  # some of it is in memory (a small table): tokenise the selection itself
            return tokenized(dataset, dataset._fingerprint)
        base = datasets.Dataset(dataset.data, info=dataset.info.copy(), fingerprint=combine("base", key))
        rows = dataset._indices.column(0).to_numpy()
    tokens = tokenized(base.remove_columns(vectors), base._fingerprint)
    joined = datasets.concatenate_datasets([tokens, base.select_columns(vectors)], axis=1)
    return joined if rows is None else joined.select(rows)


def _mapped_table_key(table) -> list | None:
    """What identifies a table made only of memory-mapped file blocks: each block's file, the operations applied to
    it (slices, column selections) and its columns; None when any block is in memory."""
    from datasets.table import ConcatenationTable, MemoryMappedTable

    blocks = [block for row in table.blocks for block in row] if isinstance(table, ConcatenationTable) else [table]
    if not all(isinstance(block, MemoryMappedTable) for block in blocks):
        return None
    return [[block.path, block.replays, block.column_names, block.num_rows] for block in blocks]


def _is_vector(feature) -> bool:
    """A fixed-length list of floats (a teacher's vectors)."""
    return (
        isinstance(feature, datasets.List)
        and getattr(feature, "length", -1) > 0
        and getattr(feature.feature, "dtype", "").startswith("float")
    )


def prepare(
    dataset: datasets.Dataset,
    tasks: list[TaskSpec],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_columns: dict[str, str] | None = None,
    negative_columns: list[str] | None = None,
    prompt_for=None,
    config=None,
) -> datasets.Dataset:
    """A user's own table → a tokenised dataset for `SentMtlTrainer`: each of `tasks` (e.g. `model.tasks`) whose
    column is present gets its targets, parsed by its type's rules (label names, absent cells); the column defaults
    to the type's (`label`, `score`, …), `label_columns` names others by task. A contrastive task takes the table's
    pairs (`text_column`, `text_pair_column`, and `negative_columns` for hard negatives) when the pair column is
    there. Distillation targets are the run's business and are not made here. `config`: the model's config
    (`model.config`), so the texts take the prompts the model was trained with (a task's, else its
    `default_prompt_name`), each checked to leave room for text under `max_length`; give it for a prompted model
    (without it, a task that names a prompt is refused: the table would be read unprompted). `prompt_for`: the
    lower-level hook (`config.prompt_for`, or a function of (task, role) giving the prefix), instead of `config`."""
    if config is not None:
        if prompt_for is not None:
            raise ValueError("give config= or prompt_for=, not both (config= applies config.prompt_for).")
        prompt_for = config.prompt_for if config.prompts else None
    named = [task.name for task in tasks if task.prompt is not None]
    if named and prompt_for is None:
        raise ValueError(f"tasks {named} take prompts: pass config=model.config, so the table's texts take them.")
    label_columns = label_columns or {}
    unknown = sorted(set(label_columns) - {task.name for task in tasks})
    if unknown:
        raise ValueError(
            f"label_columns names {unknown}, which are not among the tasks ({', '.join(t.name for t in tasks)})."
        )
    members = [
        RunTask(
            task,
            DataSpec({"train_file": "the table"}, text_column, text_pair_column, label_columns.get(task.name)),
            # `negative_columns` is the option of the type that declares it (contrastive), for its tasks only.
            {"negative_columns": negative_columns}
            if negative_columns and "negative_columns" in task_io(task).options
            else {},
        )
        for task in tasks
    ]  # the data field only says "not the corpus": the table is given
    present = [m for m in members if task_io(m.spec).present(m, dataset.column_names)]
    if not present:
        raise ValueError(
            f"the table has none of the tasks' target columns (columns: {dataset.column_names}); name "
            "them with label_columns={task name: column}."
        )
    # The prefixes this table's texts take, by their prompt's name where the config names it (as `run` checks them).
    names = {text: name for name, text in ((config.prompts or {}) if config is not None else {}).items()}
    used = role_prefixes(present, prompt_for, "the table")
    check_prompt_room({names.get(text, role): text for role, text in used.items()}, tokenizer, max_length)
    columns, _ = table_columns(dataset, present, "the table", prompt_for=prompt_for)
    return tokenize_source(columns, tokenizer, max_length)


class MultiSourceDataset(torch.utils.data.Dataset):
    """Tokenised sources one after another, and the tasks each feeds; `TaskBatchSampler` keeps each training batch
    within one source, and evaluation measures each source's tasks on it. A plain tokenised dataset is one source whose
    tasks are those with a `target__<task>` column."""

    def __init__(
        self,
        parts: list[datasets.Dataset],
        tasks: list[list[TaskSpec]] | None = None,
        domain_names: list[list[str]] | None = None,
        batch_sizes: list[int | None] | None = None,
        batches_per_epoch: list[int | None] | None = None,
    ):
        """`batch_sizes` / `batches_per_epoch`: per part, its own (None: the trainer's / the sampling strategy's)."""
        self.parts = parts
        self.tasks = tasks if tasks is not None else [None] * len(parts)
        self.domain_names = domain_names if domain_names is not None else [[] for _ in parts]
        self.batch_sizes = batch_sizes if batch_sizes is not None else [None] * len(parts)
        self.batches_per_epoch = batches_per_epoch if batches_per_epoch is not None else [None] * len(parts)
        self.offsets = np.cumsum([0] + [len(part) for part in parts])

    @classmethod
    def wrap(cls, dataset) -> "MultiSourceDataset":
        return dataset if isinstance(dataset, cls) else cls([dataset])

    def part_tasks(self, k: int, known: list[TaskSpec]) -> list[TaskSpec]:
        """The tasks part k feeds: as given, or those of `known` with a target column in it."""
        if self.tasks[k] is not None:
            return self.tasks[k]
        return [task for task in known if TARGET_PREFIX + task.name in self.parts[k].column_names]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> dict:
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.parts[k][int(index - self.offsets[k])]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The rows of a batch, read from each part in one call (the DataLoader asks for a batch at once when a
        dataset has this): one Arrow slice per part instead of one read per row."""
        indices = np.asarray(indices, dtype=np.int64)
        parts = np.searchsorted(self.offsets, indices, side="right") - 1
        rows: list = [None] * len(indices)
        for k in np.unique(parts):
            where = np.flatnonzero(parts == k)
            local = [int(i) for i in indices[where] - self.offsets[k]]
            part = self.parts[k]
            fetched = part.__getitems__(local) if hasattr(part, "__getitems__") else [part[i] for i in local]
            for i, row in zip(where, fetched):
                rows[i] = row
        return rows

    def lengths(self) -> list[list[int]]:
        """Each part's token counts, read from the Arrow column's offsets (no row is materialised)."""
        return [pc.list_value_length(part.with_format("arrow")["input_ids"]).to_numpy().tolist() for part in self.parts]

    def batch_keys(self, known: list[TaskSpec]) -> list[list[tuple] | None]:
        """Per part, each row's keys that no two rows of a training batch may share (the texts of a contrastive
        task's rows: a duplicate would be a false negative), or None."""
        out = []
        for k, part in enumerate(self.parts):
            keys = None
            for task in self.part_tasks(k, known):
                keys = task_io(task).batch_keys(task, lambda p=part, t=task: p[TARGET_PREFIX + t.name])
                if keys is not None:
                    break
            out.append(keys)
        return out


# A streamed run pads each batch to a multiple of this many tokens. Its batches are not grouped by length, so nearly
# every length up to the longest occurs as a batch shape, and the CPU's oneDNN kernels are compiled and kept per
# shape: measured on a 5M-row stream (700 steps, benchmarks/scale.py's timeline), peak anonymous memory 1.55 GB
# padded to 8 against 1.82 GB unpadded, 0.346 s a step against 0.340; over 2,000 steps 1.63 GB against 2.03, 0.360 s
# against 0.333 (single runs here vary by several percent: a small cost or noise, not resolved).
STREAM_PAD_MULTIPLE = 8


class MultiTaskCollator:
    """Rows of one source → a batch: padded inputs (and pair inputs), `task_labels` by task in each type's dtype,
    `complete_tasks` (the tasks whose target every row carries), `domain`. `pad_to_multiple_of`: pad lengths up to a
    multiple of it (fewer distinct batch shapes), never past `max_length` (the run's token limit, within the
    encoder's positions): a batch whose rounded length would pass it is padded to `max_length`."""

    INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        tasks: list[TaskSpec],
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.dtypes = {task.name: task.kind.target_dtype for task in tasks}
        self.kinds = {task.name: task.kind for task in tasks}
        self.pad_to_multiple_of, self.max_length = pad_to_multiple_of, max_length

    def _pad(self, rows: list[dict]) -> dict:
        multiple = self.pad_to_multiple_of
        if multiple and self.max_length:
            longest = max(len(row["input_ids"]) for row in rows)
            if -(-longest // multiple) * multiple > self.max_length:
                # Rounding up would pass the position limit: the top band of lengths is padded to the limit itself,
                # one shape still (padding to the longest row would give each of those lengths a shape of its own).
                return self.tokenizer.pad(rows, return_tensors="pt", padding="max_length", max_length=self.max_length)
        return self.tokenizer.pad(rows, return_tensors="pt", pad_to_multiple_of=multiple)

    def __call__(self, rows: list[dict]) -> dict:
        batch = dict(self._pad([{k: row[k] for k in self.INPUTS if k in row} for row in rows]))
        if "pair_input_ids" in rows[0]:
            pair = self._pad([{k: row[f"pair_{k}"] for k in self.INPUTS if f"pair_{k}" in row} for row in rows])
            batch.update({f"pair_{key}": value for key, value in pair.items()})
        if "negative_input_ids" in rows[0]:  # k per row: padded together, then [rows, k, length]
            k = len(rows[0]["negative_input_ids"])
            flat = [
                {key: row[f"negative_{key}"][j] for key in self.INPUTS if f"negative_{key}" in row}
                for row in rows
                for j in range(k)
            ]
            negatives = self._pad(flat)
            batch.update({f"negative_{key}": value.reshape(len(rows), k, -1) for key, value in negatives.items()})
        labels = {}
        for key in rows[0]:
            if key.startswith(TARGET_PREFIX):
                name = key[len(TARGET_PREFIX) :]
                if name not in self.dtypes:
                    raise ValueError(
                        f"the data has targets for {name!r}, which is not one of the tasks ({', '.join(self.dtypes)})."
                    )
                labels[name] = torch.as_tensor(np.asarray([row[key] for row in rows]), dtype=self.dtypes[name])
        batch["task_labels"] = labels
        # Known here, on the host, for free: which tasks have a target on every row. Their losses then take a plain
        # mean instead of a masked one, which on the device would cost each task several kernels a step to learn
        # what this batch already says (issue 33). The type's own `present` decides what an absent target is.
        batch["complete_tasks"] = tuple(name for name, value in labels.items() if self.kinds[name].present(value).all())
        batch["domain"] = torch.tensor([row.get("domain", NO_SOURCE) for row in rows], dtype=torch.long)
        return batch


__all__ = ["MultiSourceDataset", "MultiTaskCollator", "STREAM_PAD_MULTIPLE", "prepare", "tokenize_source"]
