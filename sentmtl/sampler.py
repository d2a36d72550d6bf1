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

Seeded by (seed, epoch), so a resumed run replays the interrupted epoch's order and skips what it already did.
"""

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices

STRATEGIES = ("proportional", "round_robin", "temperature")


class TaskBatchSampler(Sampler):
    """Batches of global indices; source k's rows are `offsets[k] … offsets[k] + len(lengths[k]) - 1`."""

    def __init__(self, lengths: list[list[int]], batch_size: int, strategy: str = "proportional",
                 temperature: float = 2.0, seed: int = 42, within: str = "group_by_length", min_batch_size: int = 1):  # fmt: skip
        """`within`: the order inside a source: `group_by_length`, `random`, or `sequential` (rows in order, and
        the sources' batches one source after the other: nothing is shuffled). `min_batch_size`: a source's last
        batch smaller than this joins the one before it (under W processes every process needs a row of each batch,
        and padding a share with repeated rows would put duplicates into losses that compare rows)."""
        if strategy not in STRATEGIES:
            raise ValueError(f"task sampling {strategy!r} is not supported; choose one of {', '.join(STRATEGIES)}.")
        if not temperature > 0:
            raise ValueError(f"sampling temperature {temperature!r} must be > 0.")
        self.lengths, self.batch_size, self.strategy = lengths, batch_size, strategy
        if within not in ("group_by_length", "random", "sequential"):
            raise ValueError(f"order within a source {within!r}: choose group_by_length, random or sequential.")
        self.temperature, self.seed, self.within, self.epoch = temperature, seed, within, 0
        self.offsets = [sum(len(source) for source in lengths[:k]) for k in range(len(lengths))]
        small = [k for k, source in enumerate(lengths) if len(source) < min_batch_size]
        if small:
            raise ValueError(f"source(s) {small} have fewer rows than the {min_batch_size} processes; every process "
                             "needs a row of each batch.")  # fmt: skip
        self.min_batch_size = min_batch_size
        self.batches_per_source = [len(self._split(list(range(len(source))))) for source in lengths]

    def set_epoch(self, epoch) -> None:  # the Trainer (through accelerate) calls this at every epoch, resumed ones too
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.strategy == "round_robin":
            return len(self.lengths) * min(self.batches_per_source)
        return sum(self.batches_per_source)

    def _source_batches(self, k: int, generator: torch.Generator) -> list[list[int]]:
        lengths = self.lengths[k]
        if self.within == "sequential":
            order = list(range(len(lengths)))
        elif self.within == "group_by_length" and len(lengths) > 1:
            order = get_length_grouped_indices(lengths, self.batch_size, generator=generator)
        else:
            order = torch.randperm(len(lengths), generator=generator).tolist()
        offset = self.offsets[k]
        return [[offset + i for i in batch] for batch in self._split(order)]

    def _split(self, order: list[int]) -> list[list[int]]:
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < self.min_batch_size:
            batches[-2:] = [batches[-2] + batches[-1]]
        return batches

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        per_source = [self._source_batches(k, generator) for k in range(len(self.lengths))]
        if self.strategy == "proportional":
            tagged = [batch for batches in per_source for batch in batches]
            order = range(len(tagged)) if self.within == "sequential" else torch.randperm(len(tagged), generator=generator).tolist()
            yield from (tagged[i] for i in order)
        elif self.strategy == "round_robin":
            for step in range(min(map(len, per_source))):
                for batches in per_source:
                    yield batches[step]
        else:
            weights = torch.tensor([len(source) ** (1.0 / self.temperature) for source in self.lengths], dtype=torch.float64)
            draws = torch.multinomial(weights, len(self), replacement=True, generator=generator).tolist()
            position = [0] * len(per_source)
            for k in draws:
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
