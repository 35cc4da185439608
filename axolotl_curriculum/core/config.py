"""The `curriculum:` block: levels of input length, validated with messages a user can act on.

Pure pydantic, so the Axolotl plugin and plain transformers/TRL scripts share one contract.
Everything is checked on the raw YAML first, so each error names the exact key and the fix: the
rules are small functions, one per rule, in rules.py, and run in the order listed there (the
first mistake in a block is always the one reported). The sub-blocks (`sense_grad`, `auto`,
`difficulty`, a level) are in blocks.py; their names are importable from here as before.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from .blocks import (
    MIN_INPUT_LEN,
    MODEL_SCORES,
    SCORES,
    Auto,
    Difficulty,
    Level,
    SenseGrad,
)
from .checks import check_keys
from .probe_blocks import Probes, SenseEval
from .errors import CurriculumError
from .rules import BLOCK_RULES, BUDGETS, PROMPT_CUTS, RAMP_KEYS, TRUNCATIONS

__all__ = ["BUDGETS", "MIN_INPUT_LEN", "MODEL_SCORES", "PROMPT_CUTS", "RAMP_KEYS", "SCORES",
           "TRUNCATIONS", "Auto", "Curriculum", "Difficulty", "Level", "SenseGrad"]


class Curriculum(BaseModel):
    """Staged input lengths, shortest level first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: list[Level] | Literal["auto"]
    difficulty: Difficulty | None = None  # which score orders the examples (levels' admit)
    auto: Auto | None = None         # knobs of levels: auto
    sense_grad: SenseGrad | None = None
    restart_on_resume: bool = False  # resuming under a changed block starts the levels over
    truncation: str = "head"         # head | segment | filter (see docs/cuts.md)
    segment_window: float = 0.5      # segment: a boundary must lie in this last share of input_len
    boundaries: list[str] | None = None  # segment: token text that ends a segment
    prompt_cut: str = "left"         # left: keep the answer, cut the prompt | none: skip the row
    keep_prompt_head: int = 0        # left: tokens kept from the prompt's start (the instruction)
    budget: str | None = None        # tokens | examples; default: tokens if packed, else examples
    preflight: bool | None = None    # full-length forward+backward before training; default: on GPU
    ramp: dict | None = None         # `levels: {ramp: ...}` as written; `levels` holds its steps
    short_share: float = 0.0         # every level after the first: share of a step kept short
    probes: Probes | None = None     # measured on held-out data during training
    sense_eval: SenseEval | None = None  # the eval gate: advance when the probes pass

    @model_validator(mode="before")
    @classmethod
    def check_raw(cls, data: Any) -> Any:
        """The block as written, before pydantic sees it: its keys, then `BLOCK_RULES` in order.
        One validator runs the list, not one validator per rule, because pydantic runs `before`
        validators last-defined first: the list states the order."""
        if isinstance(data, Curriculum):
            return data
        if not isinstance(data, dict):
            raise CurriculumError(
                f"curriculum: expected a mapping with a 'levels' list, got {data!r}")
        check_keys("curriculum", data, list(cls.model_fields))
        data = dict(data)  # the rules fill in what the YAML abbreviates; the caller's stays as is
        for rule in BLOCK_RULES:
            rule(data)
        return data

    @property
    def is_auto(self) -> bool:
        return self.levels == "auto"

    def resolved(self, levels: list[dict | Level]) -> "Curriculum":
        """A copy with concrete levels (the ladder `levels: auto` chose), validated as YAML is."""
        block = self.model_dump(exclude={"levels", "auto"}, exclude_none=True)
        return Curriculum.model_validate({**block, "levels": levels})

    @property
    def input_lens(self) -> list[int]:
        if self.is_auto:
            raise CurriculumError(
                "curriculum.levels: auto is chosen once the data and the run's steps are known; "
                "use Curriculum.resolved(auto.choose_levels(...)) first")
        return [level.input_len for level in self.levels]

    def admit_of(self, level: int) -> float:
        """The share of examples this level admits by difficulty (1: all)."""
        admit = self.levels[level].admit
        return 1.0 if admit is None else admit

    def truncation_of(self, level: int) -> str:
        return self.levels[level].truncation or self.truncation

    @property
    def needs_boundaries(self) -> bool:
        """Whether the data must be searched for segment boundaries (the tokenizer's `boundaries`
        tokens): some level cuts at them (truncation: segment; with levels: auto, the block's
        truncation is every level's), or the `segments` score counts them."""
        modes = ([self.truncation] if self.is_auto
                 else [self.truncation_of(k) for k in range(len(self.levels))])
        scores_segments = self.difficulty is not None and self.difficulty.score == "segments"
        return "segment" in modes or scores_segments

    def rope_of(self, level: int) -> tuple[float | None, dict | None] | None:
        """(rope_theta, rope_scaling) in effect at `level`: each key as the latest level up to
        it set it (a raised base stays raised); None while no level has set either."""
        theta = scaling = None
        for lv in self.levels[:level + 1]:
            theta = lv.rope_theta if lv.rope_theta is not None else theta
            scaling = lv.rope_scaling if lv.rope_scaling is not None else scaling
        return None if theta is None and scaling is None else (theta, scaling)

    @property
    def sets_rope(self) -> bool:
        return not self.is_auto and any(self.rope_of(k) for k in range(len(self.levels)))

    def min_steps(self, level: int) -> int:
        """The least steps a gate keeps `level` (sense_eval alone: none unless the level says)."""
        own = self.levels[level].min_steps
        if own is not None:
            return own
        return self.sense_grad.min_steps if self.sense_grad is not None else 0

    @property
    def gated(self) -> bool:
        """Whether a gate (sense_grad, sense_eval) may end a level before its max_steps."""
        return self.sense_grad is not None or self.sense_eval is not None

    def passkey_lengths(self) -> list[int]:
        """The passkey grid's lengths: as set, or every level's input_len."""
        passkey = self.probes.passkey if self.probes is not None else None
        if passkey is None:
            return []
        return sorted(set(passkey.lengths or self.input_lens))

    def check_sequence_len(self, sequence_len: int) -> None:
        """No level may ask for more tokens than the model is trained on."""
        if self.is_auto:  # auto never goes above sequence_len
            return
        for i, level in enumerate(self.levels):
            if level.input_len > sequence_len:
                raise CurriculumError(
                    f"curriculum.levels[{i}].input_len: got {level.input_len}, above "
                    f"sequence_len {sequence_len}; use at most {sequence_len} or raise sequence_len"
                )

    def short_share_of(self, level: int) -> float:
        """The share of a step `level` feeds from the first level's cuts (short data
        kept while the length grows); the first level is the short data itself."""
        if level == 0 or self.is_auto:
            return 0.0
        own = self.levels[level].short_share
        return self.short_share if own is None else own

    def check_capacity(self, capacity: int) -> None:
        """Packed: every level's examples must fit in one packed row."""
        k = max(range(len(self.levels)), key=lambda i: self.levels[i].input_len)
        if self.levels[k].input_len > capacity:
            raise CurriculumError(
                f"curriculum.levels[{k}].input_len: {self.levels[k].input_len} tokens do not fit "
                f"in a packed row of capacity={capacity}; lower input_len or raise capacity")

    def check_run_length(self, total_steps: int, *, length_from: str = "max_steps") -> str | None:
        """The last (full-length) level must get steps: the levels before it may not take the
        whole run (`total_steps` optimizer steps, set by the config key `length_from`).

        Raises `CurriculumError` naming both numbers and the fix. With sense_grad the levels'
        max_steps are caps a level may end before, so it is not an error: the same message is
        returned for the caller to warn with. None when the run is long enough (or levels: auto,
        which chooses its steps from the run's length).
        """
        if self.is_auto or len(self.levels) < 2:
            return None
        before = sum(level.max_steps or 0 for level in self.levels[:-1])
        if before < total_steps:
            return None
        run = (f"the run's max_steps is {total_steps}" if length_from == "max_steps"
               else f"the run has {total_steps} (from {length_from})")
        message = (f"curriculum.levels: the levels before the last take {before} steps, {run}: "
                   f"the last level (input_len {self.levels[-1].input_len}) would never train; "
                   f"lower the levels' max_steps or raise {length_from}")
        if not self.gated:
            raise CurriculumError(message)
        gate = "sense_grad" if self.sense_grad is not None else "sense_eval"
        return (f"{message} (with {gate} they are caps: the last level trains only if "
                "earlier levels end sooner)")

    def budget_for(self, packed: bool) -> str:
        """The budget in effect: packed rows stay full unless told otherwise (docs/cuts.md)."""
        return self.budget or ("tokens" if packed else "examples")

    def check_training(self, *, max_grad_norm: float | None, deepspeed: bool, packed: bool) -> None:
        """What the block needs from the rest of the training setup (Axolotl's YAML or a Trainer).

        sense_grad reads the norm the trainer computes for clipping; DeepSpeed fixes
        train_micro_batch_size_per_gpu, which unpacked `budget: tokens` would vary per level.
        """
        if self.sense_grad is not None and max_grad_norm is not None and max_grad_norm <= 0:
            raise CurriculumError("curriculum.sense_grad reads the gradient norm the trainer "
                                  "clips with: set max_grad_norm > 0 (1e9 measures without "
                                  "clipping)")
        if deepspeed and not packed and self.budget_for(packed) == "tokens":
            raise CurriculumError(
                "curriculum.budget: tokens without sample packing changes the micro-batch size "
                "at each level, which DeepSpeed's fixed train_micro_batch_size_per_gpu does not "
                "allow; use budget: examples, or sample_packing: true"
            )
