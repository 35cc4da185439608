"""Axolotl config keys: the `curriculum:` block, validated with the rest of the YAML."""

from __future__ import annotations

from pydantic import BaseModel, model_validator

from .config import Curriculum


class CurriculumArgs(BaseModel):
    curriculum: Curriculum | None = None

    @model_validator(mode="after")
    def _levels_fit_sequence_len(self):
        sequence_len = getattr(self, "sequence_len", None)
        if self.curriculum is not None and sequence_len:
            self.curriculum.check_sequence_len(int(sequence_len))
        return self
