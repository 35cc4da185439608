"""The batch plan: which examples each micro-batch holds, and at which input_len.

Planned one optimizer step at a time, so a level switch is exact at a step boundary and a later
decision (taken while training runs) can still reach the data. Every rank builds the identical
global plan from (seed, epoch, timeline); sharding happens afterwards. Lengths are capped at the
level's input_len *before* packing, so packed rows of a short level hold more examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

NO_LABEL = np.iinfo(np.int64).max

# pack(lengths, capacity, max_bins, bin_size) -> bins as lists of positions into `lengths`
Packer = Callable[[np.ndarray, int, int, int], list[list[int]]]


def first_scored_label(offsets: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, the position of its first label the loss scores (not -100, not position 0).

    Rows are given flat (arrow layout: `labels[offsets[i]:offsets[i+1]]`). A causal LM shifts
    labels, so position 0 is never scored; a row cut to `input_len` tokens still trains iff this
    position is below its cut length. NO_LABEL where a row has no scored label at all.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    starts, ends = offsets[:-1], offsets[1:]
    scored = np.asarray(labels) != -100
    scored[starts[starts < ends]] = False  # position 0 of every non-empty row
    where = np.flatnonzero(scored)
    k = np.searchsorted(where, starts)
    hit = np.minimum(k, max(len(where) - 1, 0))
    found = (k < len(where)) & (where[hit] < ends) if len(where) else np.zeros(len(starts), bool)
    out = np.full(len(starts), NO_LABEL, dtype=np.int64)
    out[found] = where[hit[found]] - starts[found]
    return out


def cut_lengths(lengths: np.ndarray, input_len: int) -> np.ndarray:
    return np.minimum(lengths, input_len)


def keeps_label(lengths: np.ndarray, first_label: np.ndarray, input_len: int) -> np.ndarray:
    """Which rows still have something to learn after a head cut to input_len."""
    kept = cut_lengths(lengths, input_len)
    return (kept >= 2) & (first_label < kept)


@dataclass
class PlanStats:
    """What the planner handed out, per input_len (planned ahead of training by the prefetch)."""

    examples: Counter = field(default_factory=Counter)
    tokens: Counter = field(default_factory=Counter)
    tokens_cut: Counter = field(default_factory=Counter)
    skipped_no_label: Counter = field(default_factory=Counter)


class BatchPlan:
    """Turns an epoch's example order into micro-batches, one optimizer step at a time.

    packed: a micro-batch is `bins_per_batch` bins of `capacity` tokens, refilled by `pack`
    (Axolotl's packer in the plugin). Not packed: a micro-batch is `batch_size` examples.
    """

    def __init__(
        self,
        lengths: np.ndarray,
        first_label: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        capacity: int | None = None,
        bin_size: int | None = None,
        pack: Packer | None = None,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.first_label = np.asarray(first_label, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.packed = pack is not None
        self.capacity = capacity
        self.bin_size = bin_size or capacity
        self.pack = pack
        self.stats = PlanStats()
        if self.packed and not capacity:
            raise ValueError("a packed plan needs the bin capacity")

    def eligible_count(self, input_len: int) -> int:
        return int(keeps_label(self.lengths, self.first_label, input_len).sum())

    def _order(self, epoch: int) -> Iterator[int]:
        n = len(self.lengths)
        for sweep in range(1 << 62):
            if self.shuffle:
                yield from np.random.default_rng([self.seed, epoch, sweep]).permutation(n).tolist()
            else:
                yield from range(n)

    def epoch(
        self,
        epoch: int,
        n_batches: int,
        batches_per_step: int,
        input_len_for_step: Callable[[int], int],
    ) -> Iterator[tuple[int, list]]:
        """Yield (input_len, micro-batch) for the epoch's n_batches global micro-batches.

        `input_len_for_step(k)` is asked once per step k (0-based within the epoch), when that
        step is planned, not before.
        """
        order = self._order(epoch)
        carry: list[int] = []
        emitted = 0
        step = 0
        while emitted < n_batches:
            input_len = input_len_for_step(step)
            if self.eligible_count(input_len) == 0:
                raise ValueError(
                    f"no example keeps a scored label when cut to input_len={input_len}; "
                    "raise that level's input_len"
                )
            count = min(batches_per_step, n_batches - emitted)
            if self.packed:
                batches, carry = self._packed_step(order, carry, input_len, count)
            else:
                batches = self._plain_step(order, input_len, count)
            for batch in batches:
                yield input_len, batch
            emitted += count
            step += 1

    def _keeps(self, idx: int, input_len: int) -> bool:
        kept = min(int(self.lengths[idx]), input_len)
        return kept >= 2 and int(self.first_label[idx]) < kept

    def _next_eligible(self, order: Iterator[int], input_len: int) -> int:
        for idx in order:
            if self._keeps(idx, input_len):
                return idx
            self.stats.skipped_no_label[input_len] += 1
        raise RuntimeError("example order ended")  # _order is endless

    def _account(self, idxs: list[int], input_len: int) -> None:
        full = self.lengths[idxs]
        kept = cut_lengths(full, input_len)
        self.stats.examples[input_len] += len(idxs)
        self.stats.tokens[input_len] += int(kept.sum())
        self.stats.tokens_cut[input_len] += int((full - kept).sum())

    def _plain_step(self, order: Iterator[int], input_len: int, count: int) -> list[list[int]]:
        batches = []
        for _ in range(count):
            batch = [self._next_eligible(order, input_len) for _ in range(self.batch_size)]
            self._account(batch, input_len)
            batches.append(batch)
        return batches

    def _packed_step(
        self, order: Iterator[int], carry: list[int], input_len: int, count: int
    ) -> tuple[list[list[list[int]]], list[int]]:
        n_bins = count * self.batch_size
        cands = [i for i in carry if self._keeps(i, input_len)]
        # Twice the tokens the bins hold: first-fit then has small pieces left to fill the gaps
        # (about as dense as Axolotl's whole-epoch packing); what is left over waits, in order,
        # at the front of the next step.
        target, limit = 2 * n_bins * self.capacity, 2 * n_bins * self.bin_size
        total = int(cut_lengths(self.lengths[cands], input_len).sum()) if cands else 0
        while True:
            while total < target and len(cands) < limit:
                idx = self._next_eligible(order, input_len)
                cands.append(idx)
                total += min(int(self.lengths[idx]), input_len)
            eff = cut_lengths(self.lengths[cands], input_len)
            longest_first = np.argsort(-eff, kind="stable")  # first-fit decreasing
            bins = [[int(longest_first[p]) for p in b]
                    for b in self.pack(eff[longest_first], self.capacity, n_bins, self.bin_size)]
            if len(bins) >= n_bins:
                break
            target, limit = target + self.capacity, limit + self.bin_size  # rare: draw more
        placed = {pos for b in bins for pos in b}
        bins = [[cands[pos] for pos in b] for b in bins[:n_bins]]
        for b in bins:
            self._account(b, input_len)
        carry = [c for pos, c in enumerate(cands) if pos not in placed]
        batches = [bins[i : i + self.batch_size] for i in range(0, n_bins, self.batch_size)]
        return batches, carry
