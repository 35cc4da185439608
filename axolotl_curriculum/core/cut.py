"""Where each example is cut at a level: a head cut, a cut at a semantic boundary, or no cut.

Pure numpy over compact per-row arrays computed once per run (lengths, the first scored label,
the boundary positions), so a level's cuts are a few vectorised passes and no level keeps a copy
of the data. A cut is three numbers per row: feed `row[:head] + row[start:end]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

NO_LABEL = np.iinfo(np.int64).max
# Token text ending a sentence, clause or line; EOS and turn-end tokens are added by the adapter.
DEFAULT_BOUNDARIES = (".", "!", "?", ";", ":", ",", "\n")


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


@dataclass
class Rows:
    """What the planner knows about every row, computed once per run."""

    lengths: np.ndarray
    first_label: np.ndarray
    starts: np.ndarray | None = None       # segment cuts: each row's start in the flat token array
    boundaries: np.ndarray | None = None   # segment cuts: sorted flat positions of boundary tokens
    all_scored: np.ndarray | None = None   # split: every label after the first is scored
                                           # (None: rows whose first scored label is 1)
    turn_ends: np.ndarray | None = None    # segment cuts: sorted flat positions of end-of-turn
                                           # tokens (a chat row holds two or more)

    @property
    def trainable(self) -> np.ndarray:
        """Rows with a scored label at all: every other row is skipped at every level."""
        return self.first_label < self.lengths

    def trains_every_token(self) -> np.ndarray:
        if self.all_scored is not None:
            return self.all_scored
        return self.first_label == 1

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class Cuts:
    """One level's cut of every row: feed `row[:head] + row[start:end]` if `fed`.

    A row not fed either `waits` (a filter level does not admit it yet: a longer level will) or
    is skipped at this level: `too_long` (longer than the last level admits, filter mode) or for
    want of a scored label in what the cut keeps.

    A split level (`split_cuts`) feeds *units* instead of rows: each chunk of a split row, and
    each other row once. Every array is then per unit; `row_of` names a unit's row, `space` is
    the units' own `Rows` (a chunk is a whole unit, so it counts no tokens cut) and `chunk`
    marks the units that are chunks of a longer row. The plan draws a split level's units in
    their own order, so every chunk is fed once per pass over them.

    Made once per level and never changed after: the plan asks its counts every step, so they
    are computed once (cached properties).
    """

    head: np.ndarray
    start: np.ndarray
    end: np.ndarray
    fed: np.ndarray
    waits: np.ndarray
    too_long: np.ndarray
    row_of: np.ndarray | None = None
    space: Rows | None = None
    chunk: np.ndarray | None = None
    space_key: Any = None  # the order a unit is drawn in: None for rows, else the chunk size

    @cached_property
    def lengths(self) -> np.ndarray:
        return self.head + self.end - self.start

    @cached_property
    def n_fed(self) -> int:
        """How many units this level feeds (asked every step: counted once)."""
        return int(self.fed.sum())

    @cached_property
    def mean_fed_length(self) -> float:
        return float(self.lengths[self.fed].mean()) if self.n_fed else 0.0

    @cached_property
    def chunks(self) -> np.ndarray:
        return self.chunk if self.chunk is not None else np.zeros(len(self.head), dtype=bool)

    def spec(self, unit: int) -> tuple[int, int, int, int]:
        row = self.row_of[unit] if self.row_of is not None else unit
        return int(row), int(self.head[unit]), int(self.start[unit]), int(self.end[unit])


def _segment_end(rows: Rows, input_len: int, window: float) -> np.ndarray:
    """Longest prefix within input_len ending on a boundary token, if one lies in the window."""
    lengths = rows.lengths
    end = np.minimum(lengths, input_len)
    starts = rows.starts
    # last boundary at a position < start + input_len (cut after it: end = position + 1)
    k = np.searchsorted(rows.boundaries, starts + end, side="left") - 1
    pos = rows.boundaries[np.maximum(k, 0)] - starts if len(rows.boundaries) else np.full_like(end, -1)
    pos = np.where(k >= 0, pos, -1)
    lowest = np.ceil(input_len * (1 - window)).astype(np.int64)
    use = (lengths > input_len) & (pos >= 0) & (pos + 1 >= lowest)
    return np.where(use, pos + 1, end)


@dataclass
class _TurnCut:
    """Chat rows longer than a level, cut at a turn's end: `whole` rows keep their first
    exchanges whole (`end`); `moved` rows, whose first trained turn does not fit with all
    that comes before it, keep that turn whole with the prompt's end (`head`, `start`,
    `answer_end`)."""

    whole: np.ndarray
    end: np.ndarray
    moved: np.ndarray
    head: int
    start: np.ndarray
    answer_end: np.ndarray


def _turn_cut(rows: Rows, input_len: int, keep_prompt_head: int) -> _TurnCut:
    """A chat row (two end-of-turn tokens or more) is cut after the last turn end that leaves
    a trained token within input_len, with no window: a cut mid-turn would train an answer
    without its end, or a question without its answer. Where even its first trained turn does
    not fit, `prompt_cut: left` may keep that turn whole behind the prompt's end."""
    starts, lengths, first = rows.starts, rows.lengths, rows.first_label
    t = np.append(rows.turn_ends, -1)  # (a sentinel: indexing never runs off the end)

    def after(positions):  # each row's position just after the turn end found at `positions`
        return t[positions] - starts + 1

    lo = np.searchsorted(t[:-1], starts, side="left")
    hi = np.searchsorted(t[:-1], starts + lengths, side="left")
    chat = (hi - lo >= 2) & (lengths > input_len)
    k = np.searchsorted(t[:-1], starts + np.minimum(lengths, input_len), side="left") - 1
    end = np.where(k >= lo, after(k), 0)
    whole = chat & (first < end) & (end >= 2)
    j = np.searchsorted(t[:-1], starts + np.minimum(first, lengths), side="left")
    answer_end = np.where(j < hi, after(j), lengths)
    h = min(keep_prompt_head, max(input_len - 2, 0))
    start = np.maximum(answer_end - (input_len - h), h)
    moved = chat & ~whole & (first < lengths) & ((start < first) | ((h > 0) & (start == first)))
    return _TurnCut(whole, end, moved, h, start, answer_end)


def level_cuts(rows: Rows, input_len: int, mode: str = "head", *, window: float = 0.5,
               prompt_cut: str = "left", keep_prompt_head: int = 0,
               last_level: bool = False, truncate_excess: bool = False) -> Cuts:
    """Cut every row for one level.

    head/segment: keep a prefix (for segment, ending on a boundary when one lies in the last
    `window` fraction of input_len). A row whose prefix keeps no scored label is, with
    `prompt_cut: left`, fed as its first `keep_prompt_head` tokens, the end of its prompt and the
    start of its answer instead; otherwise it is skipped at this level.
    filter: no cut; a row longer than input_len waits for a level that admits it. At the last
    level such a row follows Axolotl's excess_length_strategy (head cut if truncate, else skip).
    """
    n = len(rows)
    lengths, first = rows.lengths, rows.first_label
    zeros = np.zeros(n, dtype=np.int64)
    if mode == "filter":
        fits = lengths <= input_len
        end = np.where(fits, lengths, np.minimum(lengths, input_len))
        fed = (fits | (last_level & truncate_excess)) & (first < end)
        waits = ~fits & ~np.bool_(last_level) & (first < lengths)
        fed &= end >= 2
        return Cuts(zeros, zeros.copy(), end, fed, waits, ~fed & ~waits & ~fits & (first < lengths))
    if mode == "split":
        head_cut = level_cuts(rows, input_len, "head", prompt_cut=prompt_cut,
                              keep_prompt_head=keep_prompt_head)
        return split_cuts(rows, input_len, head_cut)
    turns = None
    if mode == "segment":
        end = _segment_end(rows, input_len, window)
        if rows.turn_ends is not None:
            turns = _turn_cut(rows, input_len, keep_prompt_head)
            end = np.where(turns.whole, turns.end, end)
    else:
        end = np.minimum(lengths, input_len)
    fed = (first < end) & (end >= 2)
    head, start = zeros, zeros.copy()
    if prompt_cut == "left":
        # Rows whose prompt fills the level: keep the answer's start with the prompt's end.
        move = ~fed & (first < lengths) & (input_len >= 2)
        h = np.minimum(keep_prompt_head, np.maximum(input_len - 2, 0))
        budget = input_len - h
        tail = np.maximum(1, budget // 2)
        s = np.maximum(first - tail, h)
        e = np.minimum(lengths, s + budget)
        s = np.maximum(np.minimum(s, e - budget), h)  # a short answer leaves room for more prompt
        head = np.where(move, h, 0)
        start = np.where(move, s, 0)
        end = np.where(move, e, end)
        fed = fed | move
        if turns is not None:  # a chat row keeps its first trained turn whole where it fits
            head = np.where(turns.moved, turns.head, head)
            start = np.where(turns.moved, turns.start, start)
            end = np.where(turns.moved, turns.answer_end, end)
            fed = fed | turns.moved
    no = np.zeros(n, dtype=bool)
    return Cuts(head, start, end, fed, no, no.copy())


def split_cuts(rows: Rows, input_len: int, head_cut: Cuts) -> Cuts:
    """split: a row that trains on every token and is longer than `input_len` becomes its
    consecutive chunks of `input_len` tokens (the last one shorter), each its own example with
    positions from 0; every other row is one unit, cut as `head_cut` cuts it (its prompt kept
    whole or prompt-cut: a chunk of a prompt would train nothing, one of an answer would lose
    its prompt). A one-token tail trains nothing alone: the chunk before gives it a token (with
    input_len 2 there is none to give, and the tail is not fed)."""
    lengths = rows.lengths
    split = rows.trains_every_token() & (lengths > input_len)
    count = np.where(split, -(-lengths // input_len), 1)
    offsets = np.concatenate([[0], np.cumsum(count)])
    row_of = np.repeat(np.arange(len(rows)), count)
    k = np.arange(offsets[-1]) - offsets[row_of]
    chunk = split[row_of]
    n = lengths[row_of]
    start = np.where(chunk, k * input_len, head_cut.start[row_of])
    end = np.where(chunk, np.minimum((k + 1) * input_len, n), head_cut.end[row_of])
    if input_len > 2:  # a tail of one token borrows the last token of the chunk before
        last = chunk & (k == count[row_of] - 1) & (end - start == 1)
        start = np.where(last, start - 1, start)
        before = np.flatnonzero(last) - 1
        end[before] -= 1
    head = np.where(chunk, 0, head_cut.head[row_of])
    fed = np.where(chunk, end - start >= 2, head_cut.fed[row_of])
    space = Rows(np.where(chunk, end - start, n), np.where(chunk, 1, rows.first_label[row_of]))
    no = np.zeros(len(row_of), dtype=bool)
    return Cuts(head, start, end, fed, no, no.copy(), row_of=row_of, space=space, chunk=chunk,
                space_key=("split", input_len))


def apply_cut(row: dict[str, Any], head: int, start: int, end: int) -> dict[str, Any]:
    """Feed `row[:head] + row[start:end]` for every per-token column, kept aligned.

    Per-token columns are the lists as long as `input_ids`; position_ids restart at 0 when the
    middle of the row was taken out. Other columns pass through.
    """
    n = len(row["input_ids"])
    if head == 0 and start == 0 and end >= n:
        return row
    out = {}
    for key, value in row.items():
        if isinstance(value, (list, tuple)) and len(value) == n:
            value = list(value[:head]) + list(value[start:end]) if head or start else value[:end]
        out[key] = value
    if (head or start) and "position_ids" in out:
        out["position_ids"] = list(range(len(out["input_ids"])))
    return out
