"""The batch plan: which examples each micro-batch holds, and how each is cut.

Planned one optimizer step at a time, so a level switch is exact at a step boundary and a later
decision (taken while training runs) can still reach the data. Every rank builds the identical
global plan from (seed, epoch, the level of each step); sharding happens afterwards. Lengths are
cut *before* packing, so packed rows of a short level hold more examples.

The example order is a sequence of passes (a fresh permutation each). Every row a pass draws
has exactly one outcome: fed (whole, cut or prompt-cut), skipped (no scored label left, or too
long for the last level), or waiting (filter mode) until a level feeds or skips it. A row is
never fed twice in one optimizer step: when the order wraps within a step's window (a level
admitting fewer rows than the window holds), a row drawn again while in the step is fed once.
Rows drawn but not fed yet (packing leftovers; rows a mixed step holds back) lead the next step;
packed, a row left out of two steps goes in first, oldest first, rows a level admits among
them by the step they began to wait (see `_Stream`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .config import BUDGETS, Curriculum
from .errors import CurriculumError
from .cut import Cuts, Rows
from .names import STEP_COUNTS

# pack(lengths, capacity, max_bins, bin_size) -> bins as lists of positions into `lengths`
Packer = Callable[[np.ndarray, int, int, int], list[list[int]]]
Spec = tuple[int, int, int, int]  # (row, head, start, end): feed row[:head] + row[start:end]
SHORT = "short"  # the stream key of the short examples a mixed level keeps
# the step counts of what was fed (the rest count rows not fed: skipped, deferred)
FED_COUNTS = ("examples", "tokens", "tokens_cut", "cut", "prompt_cut", "chunks")


@dataclass(frozen=True)
class Mix:
    """A level that keeps short data (`short_share`): its own cuts, and the first level's cuts
    from which `share` of each step's tokens or examples (packed: of its rows) are drawn, in an
    order of their own. A row is fed at most once per step, long or short."""

    main: Cuts
    short: Cuts
    share: float


def main_cuts(cuts: Cuts | Mix) -> Cuts:
    return cuts.main if isinstance(cuts, Mix) else cuts


def short_bins(share: float, n_bins: int) -> int:
    """Packed: the packed rows of a step's `n_bins` that hold short data (the level keeps one
    at least). Few bins round a small share to none: check_short_bins refuses that."""
    return min(int(round(share * n_bins)), n_bins - 1)


def check_short_bins(cur: Curriculum, n_bins: int) -> None:
    """Packed, a step's short data is whole packed rows: a share of too few rounds to none, and
    the level would silently keep no short data. Refused before training, naming the key."""
    for k in range(1, len(cur.levels)):
        share = cur.short_share_of(k)
        if share <= 0 or short_bins(share, n_bins) > 0:
            continue
        key = (f"curriculum.levels[{k}].short_share" if cur.levels[k].short_share is not None
               else "curriculum.short_share")
        need = max(2, math.floor(0.5 / share) + 1)
        fix = (f"raise gradient_accumulation_steps (or the ranks, or micro_batch_size where "
               f"packed rows are real rows) to {need} packed rows a step")
        raise CurriculumError(
            f"{key}: {share:g} of the {n_bins} packed row(s) a step holds rounds to none, so "
            f"level {k} would keep no short data; " + (
                f"{fix} (one row cannot hold both)" if n_bins < 2
                else f"{fix}, or short_share to more than {0.5 / n_bins:g}"))


def _longest(cuts: Cuts | Mix) -> int:
    """The longest example a level feeds (a mixed level: its own or a short one)."""
    parts = (cuts.main, cuts.short) if isinstance(cuts, Mix) else (cuts,)
    return max(int(c.lengths[c.fed].max()) for c in parts if c.fed.any())


class BatchPlan:
    """Turns an epoch's example order into micro-batches, one optimizer step at a time.

    packed: a micro-batch is `batch_size` bins of `capacity` tokens, filled by `pack`
    (Axolotl's packer in the plugin). Not packed: a micro-batch is `batch_size` examples.
    budget "tokens" keeps tokens per step about constant (packed rows stay full; unpacked
    batches of a short level take more examples); "examples" keeps the examples per step (a
    short level feeds fewer tokens). When a level admits fewer rows than a step could hold, the
    step holds each of them once and its micro-batches are smaller.
    `pad_to_multiple_of`: the collator pads each micro-batch's rows to its longest row rounded
    up to this multiple (Axolotl: 64, or about sequence_len with `pad_to_sequence_len`); the
    positions the model really runs on, which the shapes and `positions` counts use.
    """

    def __init__(self, rows: Rows, *, batch_size: int, seed: int, shuffle: bool = True,
                 capacity: int | None = None, bin_size: int | None = None,
                 pack: Packer | None = None, budget: str = "tokens",
                 pad_to_multiple_of: int | None = None):
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
        self.pad_to_multiple_of = pad_to_multiple_of  # the collator's: a micro-batch's width
        trainable = rows.trainable
        self._full_mean = float(rows.lengths[trainable].mean()) if trainable.any() else 1.0

    def pass_batches(self) -> int:
        """Micro-batches in one pass over the rows at full length (a loader's default epoch)."""
        if self.packed:
            return max(1, int(np.minimum(self.rows.lengths, self.capacity).sum())
                       // (self.batch_size * self.capacity))
        return max(1, len(self.rows) // self.batch_size)

    def order(self, epoch: int, cuts: Cuts | None = None, short: bool = False) -> Iterator[int]:
        """The epoch's example order: pass after pass, each a permutation of the rows (of a
        split level's units, in an order of their own; the short examples of a mixed level in
        one of their own too)."""
        n = len(self.rows) if cuts is None or cuts.space is None else len(cuts.space)
        key = [] if cuts is None or cuts.space_key is None else [1, cuts.space_key[1]]
        key = [2, *key] if short else key
        for sweep in range(1 << 62):
            if self.shuffle:
                yield from np.random.default_rng([self.seed, epoch, sweep, *key]).permutation(n).tolist()
            else:
                yield from range(n)

    def examples_per_batch(self, cuts: Cuts | Mix) -> int:
        """Unpacked: examples in one micro-batch at this level, under the budget (a mixed
        level's: at most, its short examples included)."""
        if isinstance(cuts, Mix):
            return math.ceil(sum(self.mix_rates(cuts))) + 1  # + 1: rounding to whole examples
        return max(1, int(self._rate(cuts)))

    def _rate(self, cuts: Cuts, share: float = 1.0) -> float:
        if not cuts.n_fed:  # (a first level left with no rows feeds no short examples)
            return 0.0
        if self.budget == "tokens":  # as many tokens per batch as full-length examples bring
            return share * self.batch_size * self._full_mean / cuts.mean_fed_length
        return share * self.batch_size

    def mix_rates(self, mix: Mix) -> tuple[float, float]:
        """Unpacked: a mixed level's (level examples, short examples) per micro-batch: the short
        ones bring `share` of the tokens (budget tokens) or of the examples (budget examples)."""
        return self._rate(mix.main, 1 - mix.share), self._rate(mix.short, mix.share)

    def mix_counts(self, mix: Mix, count: int) -> tuple[int, int]:
        """A mixed step's (level, short) examples (unpacked) or packed rows (packed), over its
        `count` micro-batches: each micro-batch gets one at least, the level one at least."""
        if self.packed:
            n_bins = count * self.batch_size
            n_short = short_bins(mix.share, n_bins)
            return n_bins - n_short, n_short
        main, short = self.mix_rates(mix)
        n_short = int(round(count * short))
        return max(1, int(round(count * main)), count - n_short), n_short

    def largest_batches(self, levels: list[Cuts]) -> list[tuple[int, int, int]]:
        """(rows, tokens per row, longest example) of the largest micro-batches these levels
        can feed: the shapes a pre-flight must fit. Packed: one shape. Unpacked: every level's
        (examples per batch, longest cut example) that no other level's shape covers. A mixed
        level's longest example is its own or a short one, whichever is longer (a level whose
        own examples are all shorter than the first level's cuts feeds those too)."""
        levels = [c for c in levels if main_cuts(c).fed.any()]
        longest = [_longest(c) for c in levels]
        if not levels:  # (a level skipped for want of rows feeds no shape)
            return []
        if self.packed:
            return [(self.batch_size, self.padded(self.capacity),
                     min(max(longest), self.capacity))]
        shapes = {(self.examples_per_batch(c), self.padded(n), n) for c, n in zip(levels, longest)}
        return sorted(s for s in shapes
                      if not any(o != s and o[0] >= s[0] and o[1] >= s[1] for o in shapes))

    def padded(self, width: int) -> int:
        """The width the collator pads a micro-batch whose longest row is `width` tokens to."""
        m = self.pad_to_multiple_of
        return -(-width // m) * m if m else width

    def positions(self, batch: list) -> int:
        """Positions (padding included) of one planned micro-batch as the collator shapes it:
        its rows (examples, or packed bins) times the padded width of the longest."""
        rows = [sum(s[1] + s[3] - s[2] for s in b) for b in batch] if self.packed \
            else [s[1] + s[3] - s[2] for s in batch]
        return len(rows) * self.padded(max(rows, default=0))

    def epoch(self, epoch: int, n_batches: int, batches_per_step: int,
              cuts_for_step: Callable[[int], Cuts]) -> Iterator[tuple[dict, list]]:
        """Yield (step statistics, micro-batches) for each optimizer step of the epoch.

        `cuts_for_step(k)` is asked once per step k (0-based within the epoch), when that step
        is planned, not before. Micro-batches hold `Spec`s (packed: a list of bins of them);
        every one of them holds at least one example.
        """
        streams: dict = {}  # rows, each split level's units, short examples: orders of their own
        emitted, step = 0, 0
        while emitted < n_batches:
            planned = cuts_for_step(step)
            cuts = main_cuts(planned)
            stream = self._stream(streams, epoch, cuts)
            count = min(batches_per_step, n_batches - emitted)
            if cuts.n_fed < count:
                raise ValueError(f"a level feeds {cuts.n_fed} examples, fewer than the "
                                 f"{count} micro-batches of one optimizer step")
            stream.begin_step(cuts)
            if isinstance(planned, Mix):
                batches, stats = self._mixed_step(
                    stream, self._stream(streams, epoch, planned.short, short=True), planned,
                    count)
            else:
                batches = (self._packed_step(stream, cuts, count, count * self.batch_size)
                           if self.packed else self._plain_step(stream, cuts, count))
                stats = stream.end_step()
            stats["positions"] = sum(self.positions(b) for b in batches)
            yield stats, batches
            emitted += count
            step += 1

    def _stream(self, streams: dict, epoch: int, cuts: Cuts, short: bool = False) -> "_Stream":
        key = (SHORT, cuts.space_key) if short else cuts.space_key
        if key not in streams:
            streams[key] = _Stream(self.order(epoch, cuts, short), cuts.space or self.rows)
        return streams[key]

    def _mixed_step(self, stream: "_Stream", short: "_Stream", mix: Mix,
                    count: int) -> tuple[list, dict]:
        """A step of a level that keeps short data: the level's examples first, then the short
        ones, none a row the level's part holds (those wait for the next step). Each
        micro-batch takes a part of each; packed, `batch_size` rows in all."""
        main, extra = self._mixed_parts(stream, short, mix, count)
        stats, fed = stream.end_step(), short.end_step()
        for key in FED_COUNTS:  # every fed example counts; the outcomes of rows not fed do not
            stats[key] += fed[key]
        stats["short_examples"], stats["short_tokens"] = fed["examples"], fed["tokens"]
        main, extra = self._as_specs(main, mix.main), self._as_specs(extra, mix.short)
        # the larger short parts go with the smaller level parts
        batches = [a + b for a, b in zip(_split(main, count), reversed(_split(extra, count)))]
        if not all(batches):  # few rows left to draw: every micro-batch still gets one
            both = main + extra
            batches = _split(_fill(both, count) if self.packed else both, count)
        return batches, stats

    def _mixed_parts(self, stream: "_Stream", short: "_Stream", mix: Mix,
                     count: int) -> tuple[list, list]:
        """The units of a mixed step, the level's part and the short part (packed: bins of
        them), at least `count` examples in all. Where the short part comes out smaller than
        planned (few short rows, or their rows in the level's part), the level's own examples
        fill in, one for one (packed: one packed row for one), none a row the short part
        holds; where even that leaves fewer examples than micro-batches (a split row's chunks
        held back by its short example), the short part gives way."""
        n_main, n_short = self.mix_counts(mix, count)
        take = self._packed_units if self.packed else self._plain_units
        main = take(stream, mix.main, n_main)
        short.begin_step(mix.short, exclude=_rows(main, mix.main))
        extra = take(short, mix.short, n_short)
        if len(extra) < n_short:
            stream.hold_out(_rows(extra, mix.short))
            main += take(stream, mix.main, n_short - len(extra))
        if len(_flat(main)) + len(_flat(extra)) < count:
            short.retract(_flat(extra))
            extra = []
            stream.hold_out(set())
            main += take(stream, mix.main, count - len(_flat(main)))
        return main, extra

    def _as_specs(self, units: list, cuts: Cuts) -> list:
        """Drawn units as the micro-batches hold them (packed: bins of them)."""
        if self.packed:
            return [[cuts.spec(u) for u in b] for b in units]
        return [cuts.spec(u) for u in units]

    def _plain_units(self, stream: "_Stream", cuts: Cuts, n: int) -> list[int]:
        """Up to `n` of this level's units (rows, or a split level's units), accounted."""
        units = stream.draw(n)
        stream.account(units)
        return units

    def _plain_step(self, stream: "_Stream", cuts: Cuts, count: int) -> list[list[Spec]]:
        units = self._plain_units(stream, cuts, count * self.examples_per_batch(cuts))
        return _split(self._as_specs(units, cuts), count)

    def _packed_step(self, stream: "_Stream", cuts: Cuts, count: int,
                     n_bins: int) -> list[list[list[Spec]]]:
        bins = self._as_specs(self._packed_units(stream, cuts, n_bins), cuts)
        return _split(_fill(bins, count), count)

    def _packed_units(self, stream: "_Stream", cuts: Cuts, n_bins: int) -> list[list[int]]:
        """Up to `n_bins` packed rows of this level's units (fewer if few rows are left)."""
        if n_bins == 0:
            return []
        # budget examples: pack by full length (the examples a full-length step would hold)
        sizes = stream.capped(self.capacity) if self.budget == "examples" else cuts.lengths
        cands = stream.draw(0)  # what earlier steps left over
        # Rows left out of two steps go in first, oldest first. The first `n_bins` rows of the
        # order always go in (each can open a bin), so every step feeds the oldest `n_bins` of
        # them at least: a bound on a row's wait (see `_Stream`), not two steps for every row
        # (more rows can be left over twice than the bins hold: after rows are admitted, a
        # level's rows got longer, or its own part of the packed rows shrank).
        overdue, rest = [], []
        for r in cands:
            (overdue if stream.overdue(r) else rest).append(r)
        overdue.sort(key=lambda r: (stream.since[r], -sizes[r]))
        cands = overdue + rest
        held = len(overdue)
        # Twice the tokens the bins hold: first-fit-decreasing then has small pieces left to
        # fill the gaps (about as dense as Axolotl's whole-epoch packing); what is left over
        # leads the next step.
        target, limit = 2 * n_bins * self.capacity, 2 * n_bins * self.bin_size
        total = int(sizes[cands].sum()) if cands else 0
        exhausted = False  # every row this level admits is in this step already
        while True:
            while total < target and len(cands) < limit and not exhausted:
                more = stream.draw(1)
                exhausted = not more
                cands += more
                total += int(sizes[more].sum())
            new = np.asarray(cands[held:], dtype=np.int64)
            order = cands[:held] + new[np.argsort(-sizes[new], kind="stable")].tolist()
            bins = [[order[p] for p in b]
                    for b in self.pack(sizes[order], self.capacity, n_bins, self.bin_size)]
            if len(bins) >= n_bins or exhausted:
                break
            target, limit = target + self.capacity, limit + self.bin_size  # rare: draw more
        bins = [b for b in bins[:n_bins] if b]
        placed = {r for b in bins for r in b}
        stream.give_back([r for r in cands if r not in placed])
        stream.account([r for b in bins for r in b])
        return bins


def _fill(bins: list[list[Spec]], count: int) -> list[list[Spec]]:
    """At least `count` bins (few rows admitted: every micro-batch still gets one), by taking
    examples out of the fullest bins."""
    while len(bins) < count:
        bins.sort(key=len)
        bins.append([bins[-1].pop()])
    return bins


def _flat(items: list) -> list:
    """The examples of a micro-batch or the units of a step's part (packed: of its bins)."""
    return [s for item in items for s in (item if isinstance(item, list) else [item])]


def _rows(units: list, cuts: Cuts) -> set[int]:
    """The rows of a step part's units (packed: bins of them)."""
    flat = np.asarray(_flat(units), dtype=np.int64)
    return set((cuts.row_of[flat] if cuts.row_of is not None else flat).tolist())


def _split(items: list, count: int) -> list[list]:
    """`count` consecutive parts whose sizes differ by at most one."""
    q, r = divmod(len(items), count)
    edges = np.cumsum([0] + [q + (i < r) for i in range(count)])
    return [items[edges[i]:edges[i + 1]] for i in range(count)]




class _Stream:
    """An epoch's rows in order, with rows held over and rows waiting for a longer level.

    `held`: rows drawn but not fed yet (packing leftovers, rows a mixed step holds back); they
    lead the next step. Packed, a held row left out of two of this stream's steps is overdue
    and goes in first, oldest first (`since`: the step it joined the held rows, or began to
    wait; ties longest first). A step's first `n_bins` rows always go in (each can open a
    bin), so a step feeds its `n_bins` oldest overdue rows (all, if fewer) and a row that
    joins later queues behind: a level's own row left over at step d is fed by step
    d + 2 + A // b, A: the rows held or waiting before it that are fed by then, b: the fewest
    packed rows of the level's own a step gets. Not two steps for every row: a bin takes only
    so many rows, and a level that admits many waiting rows at once (or whose rows got
    longer, or whose own part of the packed rows shrank) can hold more rows than a step packs.
    `waiting`: rows a filter level does not admit yet; a level that admits them feeds them
    among the held rows by age (a row that waited since step 1 before one left over at step
    5); one that will never admit them skips them (counted).
    """

    def __init__(self, order: Iterator[int], rows: Rows):
        self.order = order
        self.rows = rows
        self.held: list[int] = []
        self.waiting: dict[int, None] = {}  # insertion-ordered set
        self.in_step: set[int] = set()
        self.steps = 0  # steps that drew from this stream
        self.since: dict[int, int] = {}  # a held or waiting row: the step its wait began
        self.exclude: set[int] = set()  # rows another stream feeds in this step
        self.excluded: set[int] = set()  # units of them drawn in this step (held over)
        self.cuts: Cuts | None = None
        self._capped: np.ndarray | None = None
        self.stats: dict = {}

    def begin_step(self, cuts: Cuts, exclude: set[int] | None = None) -> None:
        """`exclude`: rows the step holds already (a mixed step's level part): units of them
        are held over to the next step."""
        self.stats = dict.fromkeys(STEP_COUNTS, 0)
        self.in_step = set()
        self.hold_out(exclude or set())
        self.available = cuts.n_fed
        self.steps += 1
        if cuts is not self.cuts:  # a new level: settle what waited, re-check what was held
            self.cuts = cuts
            admitted = [r for r in self.waiting if not cuts.waits[r]]
            for r in admitted:  # fed first, or skipped if this level will never feed it
                del self.waiting[r]
            self.held = [r for r in admitted + self.held if self._outcome(r)]
            # a row's wait counts from its first draw (a waiting row: the step it began to
            # wait), so rows a level admits queue among the held ones by age
            self.since = {r: self.since.get(r, self.steps)
                          for r in (*self.held, *self.waiting)}

    def capped(self, capacity: int) -> np.ndarray:
        """The rows' full lengths, at most `capacity` (computed once, not every step)."""
        if self._capped is None:
            self._capped = np.minimum(self.rows.lengths, capacity)
        return self._capped

    def hold_out(self, rows: set[int]) -> None:
        """From now on in this step, units of these rows (another stream feeds them in this
        step) are held over to the next step."""
        self.exclude, self.excluded = rows, set()

    def overdue(self, row: int) -> bool:
        """Held, left out of two of this stream's steps already."""
        return self.steps - self.since.get(row, self.steps) >= 2

    def end_step(self) -> dict:
        self.stats["waiting"] = len(self.waiting)
        return self.stats

    def draw(self, n: int) -> list[int]:
        """Up to `n` rows to feed now, none already in this step; held rows first.

        n=0 takes just the held rows (that fit the step)."""
        out, keep = [], []
        for row in self.held:
            if self._excluded(row):
                keep.append(row)
            elif (n == 0 or len(out) < n) and row not in self.in_step:
                self.in_step.add(row)
                out.append(row)
            else:
                keep.append(row)
        self.held = keep
        while len(out) < n and len(self.in_step) + len(self.excluded) < self.available:
            row = next(self.order)
            if row in self.waiting or not self._outcome(row):
                continue
            if row in self.in_step or row in self.excluded:  # the order wrapped within the step
                continue
            if self._excluded(row):  # its row is in the step already: it leads the next one
                self.held.append(row)
                self.since.setdefault(row, self.steps)
                continue
            self.in_step.add(row)
            out.append(row)
        return out

    def _excluded(self, unit: int) -> bool:
        if not self.exclude:
            return False
        row = int(self.cuts.row_of[unit]) if self.cuts.row_of is not None else unit
        if row in self.exclude:
            self.excluded.add(unit)
            return True
        return False

    def give_back(self, rows: list[int]) -> None:
        """Rows drawn for this step but not placed: they lead the next step."""
        self.in_step.difference_update(rows)
        for r in rows:
            self.since.setdefault(r, self.steps)
        self.held = rows + self.held

    def retract(self, rows: list[int]) -> None:
        """Rows fed (accounted) in this step, taken out again: they lead the next step."""
        self.account(rows, sign=-1)
        self.give_back(rows)

    def account(self, rows: list[int], sign: int = 1) -> None:
        cuts = self.cuts
        for r in rows:
            self.since.pop(r, None)
        fed = cuts.lengths[rows]
        full = self.rows.lengths[rows]
        chunks = cuts.chunks[rows]
        moved = ((cuts.head[rows] > 0) | (cuts.start[rows] > 0)) & ~chunks
        for key, n in (("examples", len(rows)), ("chunks", chunks.sum()), ("tokens", fed.sum()),
                       ("tokens_cut", (full - fed).sum()), ("prompt_cut", moved.sum()),
                       ("cut", ((fed < full) & ~moved).sum())):
            self.stats[key] += sign * int(n)

    def _outcome(self, row: int) -> bool:
        """Whether `row` can be fed at this level; if not, it waits or is skipped (counted)."""
        cuts = self.cuts
        if cuts.fed[row]:
            return True
        if cuts.waits[row]:
            if row not in self.waiting:
                self.waiting[row] = None
                self.since.setdefault(row, self.steps)
                self.stats["deferred"] += 1
        elif cuts.too_long[row]:
            self.stats["skipped_too_long"] += 1
        else:
            self.stats["skipped_no_label"] += 1
        return False
