"""Axolotl config keys: the `curriculum:` block, validated with the rest of the YAML."""

from __future__ import annotations

from pydantic import BaseModel, model_validator

from ..core.config import Curriculum


class CurriculumArgs(BaseModel):
    curriculum: Curriculum | None = None

    @model_validator(mode="after")
    def _fits_the_rest_of_the_config(self):
        if self.curriculum is None:
            return self
        sequence_len = getattr(self, "sequence_len", None)
        if sequence_len:
            self.curriculum.check_sequence_len(int(sequence_len))
        self.curriculum.check_training(max_grad_norm=getattr(self, "max_grad_norm", None),
                                       deepspeed=bool(getattr(self, "deepspeed", None)),
                                       packed=bool(getattr(self, "sample_packing", False)))
        max_steps = getattr(self, "max_steps", None)
        if isinstance(max_steps, int) and max_steps > 0:  # else known once the data is (plugin)
            # raises for a fixed schedule; the sense_grad warning is the run's, before step 1
            self.curriculum.check_run_length(max_steps)
        return self
