"""Difficulty scores ("semantic density") of every example, and the share a level admits.

Each score is one number per row, easiest = lowest, computed from the token ids in a few
vectorised passes over the flat Arrow buffers (zlib runs per row). docs/difficulty.md says what
each means. `random` is the control that says whether a score beats mere admission shares.
"""

from __future__ import annotations

import zlib

import numpy as np


def _per_row_sum(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Sum of `values` over each row's span (0 for an empty row)."""
    cums = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    return cums[starts + lengths] - cums[starts]


def length(starts, lengths, ids, **_) -> np.ndarray:
    """Tokens in the example."""
    return lengths.astype(np.float64)


def segments(starts, lengths, ids, is_boundary=None, **_) -> np.ndarray:
    """Sentences, clauses and lines: tokens that end a segment (the segment cut's boundaries)."""
    if is_boundary is None:
        raise ValueError("segments needs the tokenizer's boundary tokens")
    hits = is_boundary[np.clip(ids, 0, len(is_boundary) - 1)].astype(np.float64)
    return _per_row_sum(hits, starts, lengths)


def compression(starts, lengths, ids, **_) -> np.ndarray:
    """zlib-compressed size over raw size of the token ids: redundant text is easy (low)."""
    width = np.uint16 if len(ids) == 0 or ids.max() < 2**16 else np.uint32
    raw = ids.astype(width)
    out = np.zeros(len(starts), dtype=np.float64)
    for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
        if n:
            data = raw[s:s + n].tobytes()
            out[i] = len(zlib.compress(data, 6)) / len(data)
    return out


def rarity(starts, lengths, ids, index=None, **_) -> np.ndarray:
    """Mean surprisal (-log p) of its tokens under the dataset's own token frequencies (the
    examples `index` selects, each as often as it is selected)."""
    if len(ids) == 0:
        return np.zeros(len(starts))
    weights = None
    if index is not None:
        weights = np.repeat(np.bincount(index, minlength=len(starts)), lengths).astype(np.float64)
    counts = np.bincount(ids, weights=weights)
    seen = counts > 0  # a token only unselected rows hold is never averaged into a score
    surprisal = np.zeros(len(counts))
    surprisal[seen] = -np.log(counts[seen] / counts.sum())
    return _per_row_sum(surprisal[ids], starts, lengths) / np.maximum(lengths, 1)


SCORES = {"length": length, "segments": segments, "compression": compression, "rarity": rarity}


def scores(name: str, starts, lengths, ids, *, index=None, is_boundary=None, seed: int = 0,
           column=None) -> np.ndarray:
    """Per example of the dataset (its index mapping applied), the score `name`."""
    if name == "random":
        n = len(index) if index is not None else len(starts)
        return np.random.default_rng(seed).random(n)
    if name == "column":
        return np.asarray(column, dtype=np.float64)
    per_table_row = SCORES[name](starts, lengths, ids, is_boundary=is_boundary, index=index)
    return per_table_row[index] if index is not None else per_table_row


def admitted(score: np.ndarray, share: float) -> np.ndarray:
    """The easiest `share` of the examples that can train: the round(share x n) lowest of the
    n finite scores (ties: the earlier row first), so every level's admission is within one
    example of its share. A row that cannot train scores inf and takes no share."""
    n = len(score)
    k = int(round(share * int(np.isfinite(score).sum())))
    order = np.argsort(score, kind="stable")
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask
