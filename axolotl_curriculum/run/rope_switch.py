"""Per-level RoPE during a run: the model gets a level's rotary embedding before its first
forward, on every rank at the same step (the timeline is the same on every rank).

Host work only when the level changes; the per-step cost is one timeline look-up.
"""

from __future__ import annotations

import logging

import torch

from ..core.config import Curriculum
from ..core.errors import CurriculumError
from ..core.rope import apply_rope, merged, model_rope
from ..core.schedule import Timeline

logger = logging.getLogger(__name__)


class RopeSwitch:
    """The model, its own RoPE parameters, and the parameters applied now."""

    def __init__(self, model: torch.nn.Module, curriculum: Curriculum, timeline: Timeline,
                 rank: int):
        self.model, self.base = model, model_rope(model)
        self.curriculum, self.timeline, self.rank = curriculum, timeline, rank
        self.applied: dict | None = None  # what the model runs with (None: never changed)
        self._level: int | None = None

    @classmethod
    def of(cls, model, curriculum: Curriculum, timeline: Timeline, rank: int) -> "RopeSwitch | None":
        """The run's switch, where its levels set RoPE keys (None where none does)."""
        if not curriculum.sets_rope:
            return None
        if model is None:
            raise CurriculumError("curriculum.levels: rope_theta / rope_scaling change the "
                                  "model's rotary embedding; pass model= to train_loader")
        return cls(model, curriculum, timeline, rank)

    def apply(self, step: int) -> None:
        """Give the model the RoPE of the level 0-based `step` trains at."""
        level = self.timeline.level_at(step)
        if level == self._level:
            return
        self._level = level
        keys = self.curriculum.rope_of(level)
        params = merged(self.base, *keys) if keys else self.base
        if params == self.applied:
            return
        if self.applied is None and keys and self.rank == 0:
            logger.info("curriculum: level %d's RoPE %s replaces the model's own %s (the level's "
                        "keys win over the model config's)", level, params, self.base)
        apply_rope(self.model, params)
        self.applied = params
        if self.rank == 0:
            logger.info("curriculum: RoPE from step %d (level %d): %s", step + 1, level, params)
