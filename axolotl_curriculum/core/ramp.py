"""Ramps: the input length grows with the steps instead of level by level.

`levels: {ramp: {from: 64, to: 4096, steps: 2000, step_size: 64, shape: linear}}` is DeepSpeed's
sequence-length warmup (`fixed_linear`, `fixed_root`) and OLMo-core's doubling schedule in one
line. A ramp is expanded into the levels it passes through (one per length, each held for the
steps the ramp spends at it), so the plan, the run log, the summary and resume treat a ramp as
they treat levels. The lengths are DeepSpeed's formulas, checked against its own values.
"""

from __future__ import annotations

import math

SHAPES = ("linear", "root", "geometric")
MAX_RAMP_LEVELS = 1024  # distinct lengths a ramp may pass through (each is a level)


def ramp_lengths(start: int, end: int, steps: int, step_size: int = 1, shape: str = "linear",
                 degree: float = 2.0) -> list[int]:
    """The input length at each 1-based step 1..steps of a ramp from `start` to `end`.

    linear / root (DeepSpeed `fixed_linear` / `fixed_root`): `start + (s / steps) ** (1 /
    degree) * (end - start)`, floored, rounded down to a multiple of `step_size`, at most `end`
    and at least `start`. geometric: `start` doubled an equal share of the steps at a time
    (`start`, `2 start`, ... `end`); `step_size` does not apply.
    """
    out = []
    for s in range(1, steps + 1):
        if shape == "geometric":
            doublings = math.log2(end / start)
            length = min(end, int(start * 2 ** math.floor(doublings * s / steps + 1e-9)))
        else:
            share = (s / steps) ** (1.0 / (degree if shape == "root" else 1.0))
            length = math.floor(share * (end - start) + start)
            length -= length % step_size
            length = min(max(length, start), end)
        out.append(length)
    return out


def ramp_levels(ramp: dict) -> list[dict]:
    """The levels a ramp passes through, in order: each distinct length with the steps it is
    held (`max_steps`); the last (`to`) runs to the end of training. A ramp's `rope_theta` is
    the first level's: the RoPE base of the whole ramp (a level without one keeps it)."""
    lengths = ramp_lengths(ramp["from"], ramp["to"], ramp["steps"], ramp.get("step_size", 1),
                           ramp.get("shape", "linear"), ramp.get("degree", 2.0))
    levels: list[dict] = []
    for length in lengths:
        if levels and levels[-1]["input_len"] == length:
            levels[-1]["max_steps"] += 1
        else:
            levels.append({"input_len": length, "max_steps": 1})
    if levels[-1]["input_len"] == ramp["to"]:
        levels[-1].pop("max_steps")
    else:  # not reached within the ramp's steps (a coarse step_size): the end runs at `to`
        levels.append({"input_len": ramp["to"]})
    if ramp.get("rope_theta") is not None:  # from the first step; later levels keep it
        levels[0]["rope_theta"] = ramp["rope_theta"]
    return levels
