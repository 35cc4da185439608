"""`levels: auto`: the ladder chosen from the data's lengths, sequence_len and the run's steps.

The rule and its reasons are in docs/auto.md. In short: start short (`min_input_len`, 64 tokens,
as sequence-length warmup does), double per level (dataset decomposition's power-of-two buckets)
while rows longer than the level exist, end at sequence_len, keep at most `max_levels`, and spend
`warmup_share` of the steps below the last level, equally per level (this project's experiment:
the gains came early). Pure numpy, so `plan` shows exactly what training will use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import Auto, Curriculum, SenseGrad

MIN_ROW_SHARE = 0.01     # a level above the first must cut at least this share of the rows
FILTER_ADMIT = 0.10      # filter: the first level must admit at least this share of the rows
SENSE_GRAD_CAP = 2       # with sense_grad a level's cap is this many times its step share


def _knobs(knobs: Auto | dict | None) -> Auto:
    if isinstance(knobs, Auto):
        return knobs
    Auto.validate_raw("curriculum.auto", knobs or {})
    return Auto.model_validate(knobs or {})


def _rungs(lengths: np.ndarray, sequence_len: int, knobs: Auto, truncation: str) -> list[int]:
    """input_lens below sequence_len: doubling from min_input_len, each one cutting some rows."""
    rungs, length = [], knobs.min_input_len
    while length < sequence_len:
        rungs.append(length)
        length *= 2
    if not len(lengths):
        return []
    longer = [float((lengths > r).mean()) for r in rungs]
    if truncation == "filter":  # a level admitting few rows would feed those few over and over
        while rungs and 1.0 - longer[0] < FILTER_ADMIT:
            rungs, longer = rungs[1:], longer[1:]
    # the first level stays if any row is longer; later ones must cut a noticeable share
    return [r for i, (r, share) in enumerate(zip(rungs, longer))
            if share > 0 and (i == 0 or share >= MIN_ROW_SHARE)]


def _thin(rungs: list[int], n: int) -> list[int]:
    """n rungs evenly spread in log-length, the first and the longest kept."""
    if len(rungs) <= n:
        return rungs
    picks = np.unique(np.round(np.linspace(0, len(rungs) - 1, n)).astype(int))
    return [rungs[i] for i in picks]


def choose_levels(lengths: np.ndarray, sequence_len: int, total_steps: int, *,
                  sense_grad: bool = False, knobs: Auto | dict | None = None,
                  min_steps: int | None = None, truncation: str = "head") -> list[dict[str, Any]]:
    """Concrete levels [{input_len, max_steps}, ..., {input_len: sequence_len}].

    `lengths`: full lengths of the rows that train (a scored label). `min_steps`: sense_grad's
    default least steps per level; a level whose cap is below it gets its own, half its cap.
    Two levels or more whenever a row is longer than the first level and the run has 2 steps.
    """
    knobs = _knobs(knobs)
    lengths = np.asarray(lengths, dtype=np.int64)
    last = {"input_len": int(sequence_len)}
    rungs = _rungs(lengths, sequence_len, knobs, truncation)
    if not rungs or total_steps < 2:
        return [last]
    warm = int(total_steps * knobs.warmup_share)
    rungs = _thin(rungs, min(knobs.max_levels - 1, max(1, warm)))
    per = max(1, warm // len(rungs))
    if sense_grad:
        per = max(1, min(SENSE_GRAD_CAP * per, (total_steps - 1) // len(rungs)))
    least = min_steps if min_steps is not None else SenseGrad().min_steps
    levels = []
    for input_len in rungs:
        level = {"input_len": int(input_len), "max_steps": int(per)}
        if sense_grad and least > per:
            level["min_steps"] = max(1, per // 2)
        levels.append(level)
    return levels + [last]


def resolve(curriculum: Curriculum, lengths: np.ndarray, sequence_len: int,
            total_steps: int) -> Curriculum:
    """The curriculum with its `levels: auto` replaced by the chosen ladder (others unchanged).

    `lengths`: full lengths of the rows that train, e.g. rows.lengths[rows.first_label <
    rows.lengths]; `total_steps`: the optimizer steps the trainer will run.
    """
    if not curriculum.is_auto:
        return curriculum
    sense = curriculum.sense_grad
    levels = choose_levels(lengths, sequence_len, total_steps, sense_grad=sense is not None,
                           knobs=curriculum.auto or Auto(),
                           min_steps=sense.min_steps if sense is not None else None,
                           truncation=curriculum.truncation)
    return curriculum.resolved(levels)


def as_yaml(curriculum: Curriculum) -> str:
    """The `curriculum:` block with concrete levels, to paste into a config and edit."""
    import yaml

    block = curriculum.model_dump(mode="json", exclude={"auto"}, exclude_defaults=True)
    block["levels"] = [level.model_dump(exclude_none=True) for level in curriculum.levels]
    if block.get("sense_grad") == {}:
        block["sense_grad"] = True
    return yaml.safe_dump({"curriculum": block}, sort_keys=False).rstrip()
