"""Axolotl config keys: the `curriculum:` block, validated with the rest of the YAML."""

from __future__ import annotations

from pydantic import BaseModel, model_validator

from .config import Curriculum


class CurriculumArgs(BaseModel):
    curriculum: Curriculum | None = None

    @model_validator(mode="after")
    def _fits_the_rest_of_the_config(self):
        if self.curriculum is None:
            return self
        sequence_len = getattr(self, "sequence_len", None)
        if sequence_len:
            self.curriculum.check_sequence_len(int(sequence_len))
        if self.curriculum.sense_grad is not None and getattr(self, "max_grad_norm", None) == 0:
            raise ValueError("curriculum.sense_grad reads the gradient norm the trainer clips "
                             "with: set max_grad_norm > 0 (1e9 measures without clipping)")
        if getattr(self, "deepspeed", None):
            self.curriculum.check_fixed_micro_batch(bool(getattr(self, "sample_packing", False)))
        return self
