"""Batches in which rows that share a text (a contrastive source's anchor, positive or hard negative) are spread
apart: `distinct_batches`, the sampler's rule for a source with batch keys (`TaskIO.batch_keys`). Pure: the batches
depend only on the order, the keys and the sizes."""

from collections import deque


def distinct_batches(order: list[int], keys: list[tuple], sizes: list[int]) -> tuple[list[list[int]], int, int]:
    """Rows in `order` cut into batches of exactly `sizes` (which sum to the row count), each row once, in which no
    two rows share a key as far as the sizes allow. Depends only on (order, keys, sizes), never on hashing.

    1. A greedy fill takes the rows in order; a row that would repeat a key in the batch being filled waits, first in
       line, for the next one (sentence-transformers' NoDuplicatesBatchSampler does the same). A key that more rows
       share than there are batches must repeat somewhere: a batch may hold its even share of those rows
       (⌈rows with the key × the batch's size / all rows⌉, and by the end of batch j no more than ⌈rows with the key
       × rows in batches 1…j / all rows⌉), so they are spread evenly rather than left for the last batches. Where no
       key is that common this is the plain greedy fill, and where no key repeats, the plain split of `order`.
    2. Rows that found no batch (at the end of the pass) go one by one to the batch with room where they share the
       fewest keys (then: the most room, the first); from the batches that took them, rows are swapped between
       batches while a swap lowers the number of pairs of rows that share a key within a batch.
    3. A batch in which every two rows share a key (its rows may have no negatives) trades a row with another batch
       where it then has two rows that share no key and the other keeps two such rows if it had them.

    Returns (batches, how many rows share a key with another row of their batch, how many batches have no two rows
    that share no key: one-row batches included)."""
    own = [tuple(dict.fromkeys(row_keys)) for row_keys in keys]  # each key once per row
    total = {}
    for row in order:
        for key in own[row]:
            total[key] = total.get(key, 0) + 1
    crowded = {key: count for key, count in total.items() if count > len(sizes)}  # repeats unavoidable
    batches, pending, placed, filled, n = [], list(order), dict.fromkeys(crowded, 0), 0, len(order)
    for size in sizes:
        filled += size
        # Up to its even share by the end of this batch (-(-a // b) is ⌈a / b⌉); any other key once.
        limit = {
            key: min(-(-count * filled // n) - placed[key], -(-count * size // n)) for key, count in crowded.items()
        }
        batch, used, waiting = [], {}, []
        for position, row in enumerate(pending):
            if len(batch) == size:
                waiting += pending[position:]
                break
            if (
                all(used.get(key, 0) < limit.get(key, 1) for key in own[row])
                if crowded
                else used.keys().isdisjoint(own[row])
            ):
                batch.append(row)
                for key in own[row]:
                    used[key] = used.get(key, 0) + 1
            else:
                waiting.append(row)
        for key in crowded:
            placed[key] += used.get(key, 0)
        batches.append(batch)
        pending = waiting
    if not pending and not crowded:  # no batch repeats a key: a batch of two rows or more has two that share none
        return batches, 0, sum(len(batch) < 2 for batch in batches)
    packing = _Packing(batches, own)
    took = []
    for row in pending:  # rows that found no batch, in order, where they collide least (then: most room, first)
        room = [j for j, (batch, size) in enumerate(zip(batches, sizes)) if len(batch) < size]
        took.append(min(room, key=lambda j: (packing.entry(row, j), len(batches[j]) - sizes[j], j)))
        packing.add(row, took[-1])
    packing.spread(took)
    packing.revive()
    return batches, packing.repeated(), sum(not packing.has_free_pair(j) for j in range(len(batches)))


class _Packing:
    """Batches of rows and the count of each key in each batch (`where[key][batch]`), for `distinct_batches`.
    `keys[row]`: the row's keys, each once. Loops run over lists and insertion-ordered dicts, never over a set (sets
    serve only to look up): the result must not depend on hashing (every process of a run builds the same batches)."""

    def __init__(self, batches: list[list[int]], keys: list[tuple]):
        self.batches, self.keys, self.home, self.where = batches, keys, {}, {}
        self._low = {}  # key → its lowest count in a batch with a row without it (cached until its counts change)
        for j, batch in enumerate(batches):
            for row in batch:
                self._place(row, j)

    def _count(self, key, j: int) -> int:
        return self.where.get(key, {}).get(j, 0)

    def _place(self, row: int, j: int, changed=None) -> None:
        self.home[row] = j
        for key in self.keys[row]:
            counts = self.where.setdefault(key, {})
            counts[j] = counts.get(j, 0) + 1
            if changed is None or key in changed:
                self._low.pop(key, None)

    def _take(self, row: int, changed=None) -> None:
        j = self.home.pop(row)
        for key in self.keys[row]:
            counts = self.where[key]
            counts[j] -= 1
            if not counts[j]:
                del counts[j]
            if changed is None or key in changed:
                self._low.pop(key, None)

    def add(self, row: int, j: int) -> None:
        self.batches[j].append(row)
        self._place(row, j)

    def entry(self, row: int, j: int) -> int:
        """How many rows of batch j `row` shares a key with, each shared key counted (itself not counted)."""
        met = sum(self._count(key, j) for key in self.keys[row])
        return met - len(self.keys[row]) if self.home.get(row) == j else met

    def _lowest(self, key) -> float:
        """The lowest count of `key` in a batch that has a row without it (inf: every row of every batch has it)."""
        if key not in self._low:
            counts = self.where.get(key, {})
            if len(counts) < len(self.batches):
                self._low[key] = 0
            else:
                free = [count for j, count in counts.items() if len(self.batches[j]) > count]
                self._low[key] = min(free) if free else float("inf")
        return self._low[key]

    def _swap(self, r: int, s: int) -> None:
        a, b = self.home[r], self.home[s]
        self.batches[a][self.batches[a].index(r)] = s
        self.batches[b][self.batches[b].index(s)] = r
        changed = set(self.keys[r]).symmetric_difference(self.keys[s])  # a key both have keeps its counts
        self._take(r, changed), self._take(s, changed)
        self._place(r, b, changed), self._place(s, a, changed)

    def _gain(self, r: int, s: int) -> int:
        """How much swapping r and s (in different batches) lowers the pairs of rows that share a key in a batch."""
        a, b = self.home[r], self.home[s]
        kr, ks = self.keys[r], self.keys[s]
        after = sum(self._count(k, b) - (k in ks) for k in kr) + sum(self._count(k, a) - (k in kr) for k in ks)
        return self.entry(r, a) + self.entry(s, b) - after

    def spread(self, batches: list[int]) -> None:
        """Swaps that lower the pairs of rows sharing a key in a batch, starting from `batches` (those that took rows
        after the greedy fill), then from every batch a swap changed, until none is left to look at (each swap
        lowers the pairs: it ends). A swap helps only if a key of one row (that the other lacks) is at least two
        fewer in the other batch: a row is tried only where one of its keys is, and not after a row of its batch
        with the same such keys found no swap (until a swap changes the counts)."""
        queue = deque(dict.fromkeys(batches))
        queued = set(queue)
        while queue:
            a = queue.popleft()
            queued.discard(a)
            failed = set()  # the pressed keys (and their counts here) of rows that found no swap since the last one
            for r in list(self.batches[a]):
                if self.home[r] != a or not self.entry(r, a):
                    continue
                pressed = tuple(
                    (k, self._count(k, a)) for k in self.keys[r] if self._lowest(k) <= self._count(k, a) - 2
                )
                if not pressed or pressed in failed:
                    continue
                b = self._improve(r, a, [k for k, _ in pressed])
                if b is None:
                    failed.add(pressed)
                    continue
                failed.clear()
                for j in (a, b):
                    if j not in queued:
                        queue.append(j)
                        queued.add(j)

    def _improve(self, r: int, a: int, pressed: list) -> int | None:
        """Swaps r with the first row of another batch whose swap lowers the pairs; returns that batch, or None."""
        for b, batch in enumerate(self.batches):
            if b == a or not any(
                self._count(k, b) <= self._count(k, a) - 2 and len(batch) > self._count(k, b) for k in pressed
            ):
                continue
            for s in batch:
                if self._gain(r, s) > 0:
                    self._swap(r, s)
                    return b
        return None

    def has_free_pair(self, j: int, rows: list[int] | None = None) -> bool:
        """Whether two rows of batch j (or of `rows`) share no key."""
        rows = self.batches[j] if rows is None else rows
        if len(rows) < 2:
            return False
        at = {}  # key → the positions of the rows that have it
        for position, row in enumerate(rows):
            for key in self.keys[row]:
                at.setdefault(key, []).append(position)
        if any(len(positions) == len(rows) for positions in at.values()):
            return False  # a key every row has
        for row in rows:
            met = {position for key in self.keys[row] for position in at[key]}
            if len(met) < len(rows):
                return True
        return False

    def revive(self) -> None:
        """A batch in which every two rows share a key, and whose rows all share some keys, takes a row without
        those keys from another batch, in exchange for one of its own, where it then has two rows that share no key
        and the other batch keeps two such rows if it had them."""
        for d, batch in enumerate(self.batches):
            if len(batch) < 2 or self.has_free_pair(d):
                continue
            shared = [key for key in self.keys[batch[0]] if all(key in self.keys[row] for row in batch)]
            if shared:
                self._revive(d, shared)

    def _revive(self, d: int, shared: list) -> None:
        dead = self.batches[d]
        for b, other in enumerate(self.batches):
            if b == d or len(other) == self._count(shared[0], b):
                continue
            useful = self.has_free_pair(b)  # then it must stay so: it needs a row to give and one to keep
            if useful and len(other) - self._count(shared[0], b) < 2:
                continue
            for s in other:
                if any(key in self.keys[s] for key in shared):
                    continue
                for r in dead:
                    if not any(set(self.keys[s]).isdisjoint(self.keys[t]) for t in dead if t != r):
                        continue
                    if not useful or self.has_free_pair(b, [r if row == s else row for row in other]):
                        self._swap(r, s)
                        return

    def repeated(self) -> int:
        return sum(1 for batch in self.batches for row in batch if self.entry(row, self.home[row]))
