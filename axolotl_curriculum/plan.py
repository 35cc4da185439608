"""The batch plan: which examples each micro-batch holds, and how each is cut.

Planned one optimizer step at a time, so a level switch is exact at a step boundary and a later
decision (taken while training runs) can still reach the data. Every rank builds the identical
global plan from (seed, epoch, the level of each step); sharding happens afterwards. Lengths are
cut *before* packing, so packed rows of a short level hold more examples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

import numpy as np

from .config import BUDGETS
from .cut import Cuts, Rows

# pack(lengths, capacity, max_bins, bin_size) -> bins as lists of positions into `lengths`
Packer = Callable[[np.ndarray, int, int, int], list[list[int]]]
Spec = tuple[int, int, int, int]  # (row, head, start, end): feed row[:head] + row[start:end]


class BatchPlan:
    """Turns an epoch's example order into micro-batches, one optimizer step at a time.

    packed: a micro-batch is `batch_size` bins of `capacity` tokens, filled by `pack`
    (Axolotl's packer in the plugin). Not packed: a micro-batch is `batch_size` examples.
    budget "tokens" keeps tokens per step about constant (packed rows stay full; unpacked
    batches of a short level take more examples); "examples" keeps the examples per step (a
    short level feeds fewer tokens).
    """

    def __init__(self, rows: Rows, *, batch_size: int, seed: int, shuffle: bool = True,
                 capacity: int | None = None, bin_size: int | None = None,
                 pack: Packer | None = None, budget: str = "tokens"):
        if budget not in BUDGETS:
            raise ValueError(f"budget: got {budget!r}; use one of {BUDGETS}")
        if pack is not None and not capacity:
            raise ValueError("a packed plan needs the bin capacity")
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.packed = pack is not None
        self.capacity = capacity
        self.bin_size = bin_size or capacity
        self.pack = pack
        self.budget = budget
        trainable = rows.first_label < rows.lengths
        self._full_mean = float(rows.lengths[trainable].mean()) if trainable.any() else 1.0

    def _order(self, epoch: int) -> Iterator[int]:
        n = len(self.rows)
        for sweep in range(1 << 62):
            if self.shuffle:
                yield from np.random.default_rng([self.seed, epoch, sweep]).permutation(n).tolist()
            else:
                yield from range(n)

    def epoch(self, epoch: int, n_batches: int, batches_per_step: int,
              cuts_for_step: Callable[[int], Cuts]) -> Iterator[tuple[dict, list]]:
        """Yield (step statistics, micro-batches) for each optimizer step of the epoch.

        `cuts_for_step(k)` is asked once per step k (0-based within the epoch), when that step
        is planned, not before. Micro-batches hold `Spec`s (packed: a list of bins of them).
        """
        stream = _Stream(self._order(epoch))
        emitted, step = 0, 0
        while emitted < n_batches:
            cuts = cuts_for_step(step)
            if not cuts.fed.any():
                raise ValueError("no example can be fed at this level; raise its input_len")
            count = min(batches_per_step, n_batches - emitted)
            stream.stats = dict.fromkeys(("examples", "tokens", "tokens_cut", "skipped", "deferred"), 0)
            if self.packed:
                batches = self._packed_step(stream, cuts, count)
            else:
                batches = self._plain_step(stream, cuts, count)
            stream.stats["waiting"] = len(stream.waiting)
            yield stream.stats, batches
            emitted += count
            step += 1

    def _account(self, stream: "_Stream", rows: list[int], cuts: Cuts) -> None:
        fed = cuts.lengths[rows]
        stream.stats["examples"] += len(rows)
        stream.stats["tokens"] += int(fed.sum())
        stream.stats["tokens_cut"] += int((self.rows.lengths[rows] - fed).sum())

    def _plain_step(self, stream: "_Stream", cuts: Cuts, count: int) -> list[list[Spec]]:
        size = self.batch_size
        if self.budget == "tokens":  # as many tokens per batch as full-length examples bring
            size = max(1, int(self.batch_size * self._full_mean / cuts.lengths[cuts.fed].mean()))
        batches = []
        for _ in range(count):
            rows = [stream.next(cuts) for _ in range(size)]
            self._account(stream, rows, cuts)
            batches.append([cuts.spec(r) for r in rows])
        return batches

    def _packed_step(self, stream: "_Stream", cuts: Cuts, count: int) -> list[list[list[Spec]]]:
        n_bins = count * self.batch_size
        # budget examples: pack by full length (the examples a full-length step would hold)
        sizes = (np.minimum(self.rows.lengths, self.capacity) if self.budget == "examples"
                 else cuts.lengths)
        cands = [r for r in stream.carry if stream.keep(r, cuts)]
        stream.carry = []
        # Twice the tokens the bins hold: first-fit-decreasing then has small pieces left to
        # fill the gaps (about as dense as Axolotl's whole-epoch packing); what is left over
        # leads the next step, in order.
        target, limit = 2 * n_bins * self.capacity, 2 * n_bins * self.bin_size
        total = int(sizes[cands].sum()) if cands else 0
        while True:
            while total < target and len(cands) < limit:
                row = stream.next(cuts)
                cands.append(row)
                total += int(sizes[row])
            eff = sizes[cands]
            longest_first = np.argsort(-eff, kind="stable")
            bins = [[int(longest_first[p]) for p in b]
                    for b in self.pack(eff[longest_first], self.capacity, n_bins, self.bin_size)]
            if len(bins) >= n_bins:
                break
            target, limit = target + self.capacity, limit + self.bin_size  # rare: draw more
        bins = bins[:n_bins]
        placed = {pos for b in bins for pos in b}
        stream.carry = [c for pos, c in enumerate(cands) if pos not in placed]
        rows = [[cands[pos] for pos in b] for b in bins]
        self._account(stream, [r for b in rows for r in b], cuts)
        specs = [[cuts.spec(r) for r in b] for b in rows]
        return [specs[i : i + self.batch_size] for i in range(0, n_bins, self.batch_size)]


class _Stream:
    """An epoch's rows in order, with rows waiting for a longer level (filter mode).

    A row waits once: met again in a later sweep while it still waits, it is not queued twice.
    """

    def __init__(self, order: Iterator[int]):
        self.order = order
        self.carry: list[int] = []
        self.waiting: dict[int, None] = {}  # insertion-ordered set
        self.ready: deque[int] = deque()
        self._ready_cuts: Cuts | None = None
        self.stats: dict = {}

    def _refresh(self, cuts: Cuts) -> None:
        if cuts is not self._ready_cuts:  # a new level: waiting rows it admits go first
            self._ready_cuts = cuts
            admitted = [r for r in self.waiting if cuts.fed[r]]
            self.ready.extend(admitted)
            for r in admitted:
                del self.waiting[r]

    def next(self, cuts: Cuts) -> int:
        self._refresh(cuts)
        while self.ready:
            row = self.ready.popleft()
            if self.keep(row, cuts):
                return row
        for row in self.order:
            if row not in self.waiting and self.keep(row, cuts):
                return row
        raise RuntimeError("example order ended")  # _order is endless

    def keep(self, row: int, cuts: Cuts) -> bool:
        """Whether `row` is fed now; if not, it waits for a longer level or counts as skipped."""
        if cuts.fed[row]:
            return True
        if cuts.waits[row]:
            if row not in self.waiting:
                self.waiting[row] = None
                self.stats["deferred"] += 1
        else:
            self.stats["skipped"] += 1
        return False
