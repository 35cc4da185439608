"""Cutting one tokenized example to a level's input_len."""

from __future__ import annotations

from typing import Any


def cut_head(row: dict[str, Any], input_len: int) -> dict[str, Any]:
    """Keep the first input_len tokens of every per-token column.

    Per-token columns are the lists as long as `input_ids` (labels, attention_mask,
    position_ids, ...); they are cut together so they stay aligned. Other columns pass through.
    """
    n = len(row["input_ids"])
    if n <= input_len:
        return row
    return {
        key: value[:input_len] if hasattr(value, "__len__") and not isinstance(value, str) and len(value) == n else value
        for key, value in row.items()
    }
