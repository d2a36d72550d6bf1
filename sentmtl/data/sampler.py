"""Which data source the next batch comes from: one source per batch, in an order that depends only on (seed, epoch).

A *source* is one dataset feeding one or more tasks (the seed's corpus feeds Task A, Task B and distillation at once;
STS-B pairs feed a similarity task). Within a source, batches are length-grouped (little padding) or random; across
sources, the strategy interleaves them:

- `proportional`: every batch of every source once per epoch, shuffled together, so a source gets steps in
  proportion to its size (sentence-transformers' "proportional").
- `round_robin`: one batch of each source in turn, until the smallest source runs out (sentence-transformers'
  "round_robin"): every source gets the same number of steps, and larger sources show a fresh subset each epoch.
- `temperature`: each step draws a source with probability ∝ size^(1/T) (jiant; T = 1 is proportional in
  expectation, large T uniform), as many steps as `proportional` has; a source drawn past its end starts a fresh
  permutation of its batches.

A source may have its own batch size, and a fixed number of batches per epoch (`batches_per_epoch`: a fresh subset of
its rows each epoch, or more than one pass): the strategy then orders the other sources, and the fixed ones' batches
are spread evenly among theirs (shuffled in, under `proportional`). A source with batch keys (a contrastive task's
texts) gets batches of the same count and sizes (save that a last batch of one row joins the one before it) in which
no two rows share a key as far as that count allows: a row that would repeat one waits for a later batch, rows that
cannot avoid a repeat are spread where they repeat least, and a batch in which every two rows share a key trades a
row with another batch where it can (`distinct_batches`).

Seeded by (seed, epoch), so a resumed run replays the interrupted epoch's order and skips what it already did.
"""

import logging

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

from .distinct_batches import distinct_batches

STRATEGIES = ("proportional", "round_robin", "temperature")
logger = logging.getLogger(__name__)


class TaskBatchSampler(Sampler):
    """Batches of global indices; source k's rows are `offsets[k] … offsets[k] + len(lengths[k]) - 1`."""

    def __init__(
        self,
        lengths: list[list[int]],
        batch_size: int | list[int],
        strategy: str = "proportional",
        temperature: float = 2.0,
        seed: int = 42,
        within: str = "group_by_length",
        min_batch_size: int = 1,
        batches_per_epoch: list[int | None] | None = None,
        keys: list[list | None] | None = None,
    ):
        """`within`: the order inside a source: `group_by_length`, `random`, or `sequential` (rows in order, and
        the sources' batches one source after the other: nothing is shuffled). `min_batch_size`: a source's last
        batch smaller than this joins the one before it (under W processes every process needs a row of each batch,
        and padding a share with repeated rows would put duplicates into losses that compare rows). `batch_size`:
        one for all sources or one per source. `batches_per_epoch`: per source, a fixed count (None: the
        strategy's). `keys`: per source, each row's keys (a tuple) that no two rows of a batch should share (as far
        as the batch count allows: `distinct_batches`), or None; such a source's last batch of one row joins the one
        before it too."""
        if strategy not in STRATEGIES:
            raise ValueError(f"task sampling {strategy!r} is not supported; choose one of {', '.join(STRATEGIES)}.")
        if not temperature > 0:
            raise ValueError(f"sampling temperature {temperature!r} must be > 0.")
        self.lengths, self.strategy = lengths, strategy
        sizes = list(batch_size) if isinstance(batch_size, (list, tuple)) else [batch_size] * len(lengths)
        self.batch_sizes = sizes
        self.fixed = list(batches_per_epoch) if batches_per_epoch is not None else [None] * len(lengths)
        self.keys = list(keys) if keys is not None else [None] * len(lengths)
        if not len(sizes) == len(self.fixed) == len(self.keys) == len(lengths):
            raise ValueError("batch sizes, batches_per_epoch and keys need one entry per source.")
        if within not in ("group_by_length", "random", "sequential"):
            raise ValueError(f"order within a source {within!r}: choose group_by_length, random or sequential.")
        self.temperature, self.seed, self.within, self.epoch = temperature, seed, within, 0
        self.offsets = [sum(len(source) for source in lengths[:k]) for k in range(len(lengths))]
        small = [k for k, source in enumerate(lengths) if len(source) < min_batch_size]
        if small:
            raise ValueError(
                f"source(s) {small} have fewer rows than the {min_batch_size} processes; every process "
                "needs a row of each batch."
            )
        self.min_batch_size = min_batch_size
        self.batches_per_source = [len(self._sizes(k)) for k in range(len(lengths))]
        self.free = [k for k in range(len(lengths)) if self.fixed[k] is None]  # sources the strategy orders
        self._warned = set()  # keyed sources whose repeats were reported

    def set_epoch(self, epoch) -> None:  # the Trainer (through accelerate) calls this at every epoch, resumed ones too
        self.epoch = int(epoch)

    def _free_count(self) -> int:
        """Batches per epoch of the sources the strategy orders."""
        counts = [self.batches_per_source[k] for k in self.free]
        if not counts:
            return 0
        return len(counts) * min(counts) if self.strategy == "round_robin" else sum(counts)

    def __len__(self) -> int:
        return self._free_count() + sum(n for n in self.fixed if n is not None)

    def _source_batches(self, k: int, generator: torch.Generator) -> list[list[int]]:
        lengths = self.lengths[k]
        if self.within == "sequential":
            order = list(range(len(lengths)))
        elif self.within == "group_by_length" and len(lengths) > 1:
            order = get_length_grouped_indices(lengths, self.batch_sizes[k], generator=generator)
        else:
            order = torch.randperm(len(lengths), generator=generator).tolist()
        offset = self.offsets[k]
        return [[offset + i for i in batch] for batch in self._split(order, k)]

    def _sizes(self, k: int) -> list[int]:
        """Source k's batch sizes in an epoch: full batches, the last smaller; a last one smaller than
        `min_batch_size` joins the one before it, and so does a last batch of one row of a source with keys (a
        contrastive batch of one row has no in-batch negatives). The count depends on the row count alone."""
        n, size = len(self.lengths[k]), self.batch_sizes[k]
        sizes = [min(size, n - start) for start in range(0, n, size)]
        least = max(self.min_batch_size, 1 if self.keys[k] is None else 2)
        if len(sizes) > 1 and sizes[-1] < least:
            sizes[-2:] = [sizes[-2] + sizes[-1]]
        return sizes

    def _split(self, order: list[int], k: int) -> list[list[int]]:
        sizes = self._sizes(k)
        if self.keys[k] is None:
            starts = [sum(sizes[:j]) for j in range(len(sizes))]
            return [order[start : start + size] for start, size in zip(starts, sizes)]
        # The same number and sizes of batches (so the epoch's length is known and fixed, and every process gets its
        # share), filled so that no two rows of a batch share a key as far as that count allows.
        batches, repeated, closed = distinct_batches(order, self.keys[k], sizes)
        if (repeated or closed) and k not in self._warned:  # said once per source
            self._warned.add(k)
            shared = {}
            for row_keys in self.keys[k]:
                for key in dict.fromkeys(row_keys):
                    shared[key] = shared.get(key, 0) + 1
            logger.warning(
                "source %d, epoch %d: %d of its %d rows share a text with another row of their batch (up to %d "
                "rows share one text, and a pass has %d batches), and %d batch(es) have no two rows without a "
                "shared text; the loss leaves a shared text out of the negatives, so such a batch may have no "
                "negatives but its rows' hard negatives.",
                k,
                self.epoch,
                repeated,
                len(order),
                max(shared.values(), default=0),
                len(sizes),
                closed,
            )
        return batches

    def _fixed_batches(self, k: int, generator: torch.Generator) -> list[list[int]]:
        """Source k's `batches_per_epoch`: its batches in this epoch's order, more passes when it asks for more."""
        batches = []
        while len(batches) < self.fixed[k]:
            batches += self._source_batches(k, generator)
        return batches[: self.fixed[k]]

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        per_source = {k: self._source_batches(k, generator) for k in self.free}
        fixed = {k: self._fixed_batches(k, generator) for k in range(len(self.lengths)) if self.fixed[k] is not None}
        if self.strategy == "proportional":
            tagged = [batch for batches in [*per_source.values(), *fixed.values()] for batch in batches]
            order = (
                range(len(tagged))
                if self.within == "sequential"
                else torch.randperm(len(tagged), generator=generator).tolist()
            )
            yield from (tagged[i] for i in order)
            return
        base = list(self._ordered(per_source, generator))
        # Every batch gets a time in (0, 1): the base sequence's evenly spaced, each fixed source's too; merged by
        # time (a base batch first on a tie), the fixed sources' batches are spread evenly through the epoch.
        timed = [((j + 0.5) / len(base), 0, batch) for j, batch in enumerate(base)]
        for k, batches in fixed.items():
            timed += [((j + 0.5) / len(batches), 1 + k, batch) for j, batch in enumerate(batches)]
        yield from (batch for _, _, batch in sorted(timed, key=lambda item: item[:2]))

    def _ordered(self, per_source: dict, generator: torch.Generator):
        """The strategy's order of the free sources' batches (round_robin or temperature)."""
        if not per_source:
            return
        if self.strategy == "round_robin":
            for step in range(min(map(len, per_source.values()))):
                for batches in per_source.values():
                    yield batches[step]
            return
        sources = list(per_source)
        # ∝ size^(1/T), the size in batches when the sources' batch sizes differ (T = 1: proportional to the steps
        # each would get); with one batch size, rows (the order runs saved before per-source sizes existed replay).
        per_batch = [1.0 if len(set(self.batch_sizes)) == 1 else self.batch_sizes[k] for k in sources]
        weights = torch.tensor(
            [(len(self.lengths[k]) / b) ** (1.0 / self.temperature) for k, b in zip(sources, per_batch)],
            dtype=torch.float64,
        )
        draws = torch.multinomial(weights, self._free_count(), replacement=True, generator=generator).tolist()
        position = dict.fromkeys(sources, 0)
        for index in draws:
            k = sources[index]
            if position[k] == len(per_source[k]):  # drawn past its end: a fresh permutation of its batches
                per_source[k], position[k] = self._source_batches(k, generator), 0
            yield per_source[k][position[k]]
            position[k] += 1


class RankBatches(Sampler):
    """This process's share of each global batch: rows r, r + W, r + 2W, … of it (W processes). All processes thus
    train on the same source at the same step (DDP then sees the same parameters used everywhere), and W processes ×
    b rows see the rows one process would see in batches of W × b. Shares may differ by one row (nothing is repeated:
    a repeated row would count twice in a loss that compares rows); the sampler's `min_batch_size` = W gives every
    process at least one. With one process it passes the batches through."""

    def __init__(self, sampler: TaskBatchSampler, num_processes: int = 1, process_index: int = 0):
        self.sampler, self.num_processes, self.process_index = sampler, num_processes, process_index

    def set_epoch(self, epoch) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for batch in self.sampler:
            yield batch[self.process_index :: self.num_processes]
