"""The resume rules: which changes to the block a checkpoint refuses, and how levels restart.

A resume under other values of the keys that decide what is fed would not replay the same
data, so it is refused, or (`restart_on_resume: true`) the levels start over at the
checkpoint's step. `preflight` and `restart_on_resume` change nothing that was fed.
"""

from __future__ import annotations

import logging

from ..core.config import Curriculum
from ..core.errors import CurriculumError
from ..core.schedule import Segment, Timeline

logger = logging.getLogger(__name__)
DATA_KEYS = ("levels", "sense_grad", "truncation", "segment_window", "boundaries", "prompt_cut",
             "keep_prompt_head", "budget", "difficulty", "short_share")


def _fed(block: dict, key: str):
    """The part of a block's `key` that decides what is fed (the score cache does not)."""
    value = block.get(key)
    if key == "difficulty" and isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != "cache"}
    return value


def changed_keys(saved: dict, now: dict) -> list[str]:
    """The data keys whose values differ between a checkpoint's block and this run's."""
    return [key for key in DATA_KEYS if _fed(saved, key) != _fed(now, key)]


def restore(saved: dict | None, global_step: int, curriculum: Curriculum,
            timeline: Timeline) -> bool:
    """Put a checkpoint's timeline back; True when the rest of its state applies too. A missing
    state, or (with `restart_on_resume`) a changed block, starts the levels over instead."""
    if saved is None:
        logger.warning("curriculum: no curriculum state in the checkpoint; the levels start "
                       "over at step %d", global_step + 1)
        restart_at(timeline, global_step)
        return False
    changed = changed_keys(saved["curriculum"], curriculum.model_dump(mode="json"))
    if changed:
        if not curriculum.restart_on_resume:
            raise CurriculumError(
                f"curriculum: the checkpoint was trained with other {', '.join(changed)}; "
                "restore them, or set curriculum.restart_on_resume: true to start the levels "
                f"over from step {global_step + 1}")
        logger.warning("curriculum: changed %s; the levels start over at step %d",
                       ", ".join(changed), global_step + 1)
        restart_at(timeline, global_step)
        return False
    timeline.load_state_dict(saved["timeline"])
    return True


def restart_at(timeline: Timeline, global_step: int) -> None:
    """Level 0 from step `global_step + 1`; the steps already trained replay (to be skipped by
    the loader) at the last level."""
    timeline.segments = [Segment(0, timeline.last_level), Segment(global_step, 0)]
