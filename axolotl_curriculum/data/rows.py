"""Per-row statistics read straight from a tokenized dataset's Arrow buffers.

Lengths, the first label the loss scores and (for segment cuts) the positions of boundary
tokens, in a few vectorised passes: the planner never touches a row's tokens again.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from ..core import difficulty
from ..core.config import Curriculum
from ..core.cut import DEFAULT_BOUNDARIES, NO_LABEL, Rows, first_scored_label
from ..core.errors import CurriculumError

logger = logging.getLogger(__name__)


def _flat(column) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row starts, row lengths, values) of a list column, over all its Arrow chunks.

    A chunk may be a slice of a larger array (`select`, `shard`, `train[50%:]`): its offsets
    then start past 0 and its `.values` still hold the whole parent, so values are taken from
    the first offset on.
    """
    starts, lengths, values, base = [], [], [], 0
    for chunk in column.chunks:
        offsets = np.asarray(chunk.offsets, dtype=np.int64)
        first, last = int(offsets[0]), int(offsets[-1])
        starts.append(offsets[:-1] - first + base)
        lengths.append(np.diff(offsets))
        values.append(chunk.values.slice(first, last - first).to_numpy(zero_copy_only=False))
        base += last - first
    if not starts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(starts), np.concatenate(lengths), np.concatenate(values)


def rows_for(curriculum: Curriculum, dataset, tokenizer,
             eot_tokens: list[str] | None = None) -> tuple[Rows, np.ndarray | None]:
    """The rows' statistics for a run of `curriculum`, with the boundary mask where segments
    are looked for (segment cuts, the `segments` score)."""
    if not curriculum.needs_boundaries:
        return row_stats(dataset), None
    if tokenizer is None:
        cur = curriculum
        modes = ([cur.truncation] if cur.is_auto
                 else [cur.truncation_of(k) for k in range(len(cur.levels))])
        raise CurriculumError(
            f"curriculum.{'truncation' if 'segment' in modes else 'difficulty'}: segments are "
            "found with the tokenizer's boundary tokens; pass tokenizer= to train_loader")
    mask = boundary_mask(tokenizer, curriculum.boundaries or DEFAULT_BOUNDARIES)
    return row_stats(dataset, mask, turn_end_ids(tokenizer, eot_tokens)), mask


def row_stats(dataset, is_boundary: np.ndarray | None = None,
              turn_ids: np.ndarray | None = None) -> Rows:
    """Lengths, first scored labels and (if asked) boundary positions of a `datasets.Dataset`;
    with `turn_ids` (the end-of-turn token ids) too the positions of turn ends, where a
    segment cut ends a chat row.

    Labels: `labels` (-100 = not scored), else TRL's `completion_mask`, else every token after
    the first. An index mapping (`select`, `shuffle`, `filter` without flatten) is honoured.
    """
    table = _table(dataset)
    starts, lengths, ids = _flat(table.column("input_ids"))
    if "labels" in table.column_names:
        l_starts, _, labels = _flat(table.column("labels"))
        first = first_scored_label(np.append(l_starts, len(labels)), labels)
        all_scored = _all_scored(l_starts, lengths, labels != -100)
    elif "completion_mask" in table.column_names:  # TRL: 1 where the loss scores the token
        m_starts, _, scored = _flat(table.column("completion_mask"))
        first = first_scored_label(np.append(m_starts, len(scored)), np.where(scored == 1, 0, -100))
        all_scored = _all_scored(m_starts, lengths, scored == 1)
    else:
        first = np.where(lengths >= 2, 1, NO_LABEL)
        all_scored = lengths >= 2
    boundaries = turn_ends = None
    if is_boundary is not None:
        boundaries = np.flatnonzero(is_boundary[np.clip(ids, 0, len(is_boundary) - 1)])
        if turn_ids is not None:
            turn_ends = np.flatnonzero(np.isin(ids, turn_ids))
    else:
        starts = None
    del ids
    idx = _index(dataset)
    if idx is not None:
        lengths, first, all_scored = lengths[idx], first[idx], all_scored[idx]
        starts = starts[idx] if starts is not None else None
    return Rows(lengths, first, starts, boundaries, all_scored, turn_ends)


def _all_scored(starts: np.ndarray, lengths: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Per row, whether every label after the first is scored (and there is one): the rows
    `truncation: split` may cut anywhere."""
    unscored = np.concatenate([[0], np.cumsum(~scored, dtype=np.int64)])
    first_unscored = unscored[np.minimum(starts + 1, len(scored))]  # position 0 never counts
    return (lengths >= 2) & (unscored[starts + lengths] - first_unscored == 0)


def _table(dataset):
    return dataset.data.table if hasattr(dataset.data, "table") else dataset.data


def _index(dataset) -> np.ndarray | None:
    if getattr(dataset, "_indices", None) is None:
        return None
    return np.asarray(dataset._indices.column(0).to_numpy(), dtype=np.int64)


def difficulty_scores(dataset, spec, is_boundary: np.ndarray | None = None) -> np.ndarray:
    """Per example, a CPU `curriculum.difficulty` score (`spec`: config.Difficulty)."""
    column = None
    if spec.score == "column":
        if spec.column not in dataset.column_names:
            raise CurriculumError(
                f"curriculum.difficulty.column: the dataset has no column {spec.column!r}; its "
                f"columns: {', '.join(dataset.column_names)}")
        try:
            column = np.asarray(dataset[spec.column], dtype=np.float64)
        except (TypeError, ValueError):
            raise CurriculumError(f"curriculum.difficulty.column: column {spec.column!r} must hold "
                                  "one number per example (lower = easier)") from None
    starts, lengths, ids = _flat(_table(dataset).column("input_ids"))
    return difficulty.scores(spec.score, starts, lengths, ids, index=_index(dataset),
                             is_boundary=is_boundary, seed=spec.seed, column=column)


def content_digest(dataset, columns: tuple[str, ...] = ("input_ids", "labels", "completion_mask")
                   ) -> str:
    """A hash of what these columns hold, row by row, after the index mapping: the same data
    prepared again, or loaded back from disk, has the same digest (HF's `_fingerprint` does not:
    it follows the operations, and a reload starts a new chain)."""
    h = hashlib.blake2b(digest_size=16)
    table = _table(dataset)
    for name in columns:
        if name not in table.column_names:
            continue
        h.update(name.encode())
        column = table.column(name)
        if hasattr(column.type, "value_type"):  # a list per row
            _, lengths, values = _flat(column)
            h.update(np.ascontiguousarray(lengths))
        else:
            values = column.to_numpy(zero_copy_only=False)
            if not np.issubdtype(values.dtype, np.number):  # hashed as text: the score's own
                values = np.frombuffer("\0".join(map(str, values)).encode(), np.uint8)  # check
            values = values.astype(np.float64)  # names a column that holds no numbers
        h.update(np.ascontiguousarray(values))
    index = _index(dataset)
    if index is not None:
        h.update(np.ascontiguousarray(index))
    return h.hexdigest()


_SAID: set[tuple] = set()  # the eot_tokens warnings already given in this process


def turn_end_ids(tokenizer, eot_tokens: list[str] | None = None) -> np.ndarray:
    """The token ids that end a chat turn: Axolotl's `eot_tokens` where set, else the
    tokenizer's eos (Axolotl's chat_template default, and ChatML's `<|im_end|>` where a
    model's eos is set to it)."""
    tokens = [t for t in eot_tokens or [tokenizer.eos_token] if t is not None]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}
    unknown = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    said = (tokenizer.name_or_path, tuple(unknown))
    if unknown and eot_tokens and said not in _SAID and int(os.environ.get("RANK", "0")) == 0:
        # Axolotl drops eot_tokens absent from the template; here a dropped one would silently
        # stop segment cuts ending turns, so say so, once a run on rank 0 (the plan and each
        # dataset ask again); the run still goes on: rows are cut as text
        _SAID.add(said)
        logger.warning(f"curriculum: eot_tokens {unknown} are not tokens of this tokenizer; "
                       f"segment cuts do not end chat turns at them. Fix: list your template's "
                       f"turn-ending token under eot_tokens (for ChatML: <|im_end|>)")
    return np.asarray([i for t, i in ids.items() if t not in unknown], dtype=np.int64)


def boundary_mask(tokenizer, marks: list[str] | tuple[str, ...]) -> np.ndarray:
    """Which token ids end a segment: their text ends with a mark, or they end a turn/sequence.

    Decided once per run from the tokenizer's own vocabulary, so cutting never decodes text.
    """
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
    mask = np.array([t.rstrip(" ").endswith(tuple(marks)) for t in texts], dtype=bool)
    for token_id in (tokenizer.eos_token_id, *getattr(tokenizer, "all_special_ids", [])):
        if token_id is not None and token_id not in (tokenizer.bos_token_id, tokenizer.pad_token_id,
                                                     tokenizer.unk_token_id):
            mask[token_id] = True
    return mask
