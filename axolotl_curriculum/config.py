"""The `curriculum:` block: levels of input length, validated with messages a user can act on.

Pure pydantic, so the Axolotl plugin and plain transformers/TRL scripts share one contract.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

MIN_INPUT_LEN = 2  # one token has nothing to predict: its label is never scored


def _check_keys(where: str, data: dict, allowed: list[str]) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(
                f"{where}: unknown key '{key}'; {hint}allowed keys: {', '.join(allowed)}"
            )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Level(BaseModel):
    """LEVEL: one stage of training; every example is cut to at most `input_len` tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_len: int
    max_steps: int | None = None


class Curriculum(BaseModel):
    """Staged input lengths, shortest level first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: list[Level]

    @model_validator(mode="before")
    @classmethod
    def _validate_raw(cls, data: Any) -> Any:
        # Checked on the raw YAML so each error names the exact key and the fix, in one line.
        if isinstance(data, Curriculum):
            return data
        if not isinstance(data, dict):
            raise ValueError(
                f"curriculum: expected a mapping with a 'levels' list, got {data!r}"
            )
        _check_keys("curriculum", data, list(cls.model_fields))
        levels = data.get("levels")
        if not isinstance(levels, list) or not levels:
            raise ValueError(
                "curriculum.levels: give a non-empty list of levels, e.g. "
                "[{input_len: 256, max_steps: 100}, {input_len: 1024}]"
            )
        previous = None
        for i, level in enumerate(levels):
            where = f"curriculum.levels[{i}]"
            if isinstance(level, Level):
                level = level.model_dump()
            if not isinstance(level, dict):
                raise ValueError(f"{where}: expected a mapping like {{input_len: 256}}, got {level!r}")
            _check_keys(where, level, list(Level.model_fields))
            if "input_len" not in level:
                raise ValueError(f"{where}.input_len: missing; every level needs an input_len (tokens kept per example)")
            input_len = level["input_len"]
            if not _is_int(input_len) or input_len < MIN_INPUT_LEN:
                raise ValueError(
                    f"{where}.input_len: got {input_len!r}; use an integer >= {MIN_INPUT_LEN}"
                )
            if previous is not None and input_len <= previous:
                raise ValueError(
                    f"{where}.input_len: got {input_len}; levels must grow, use a value above "
                    f"{previous} (the previous level's input_len)"
                )
            previous = input_len
            max_steps = level.get("max_steps")
            if max_steps is not None and (not _is_int(max_steps) or max_steps <= 0):
                raise ValueError(f"{where}.max_steps: got {max_steps!r}; use a positive integer")
            if max_steps is None and i < len(levels) - 1:
                raise ValueError(
                    f"{where}.max_steps: missing; every level but the last needs max_steps "
                    "(optimizer steps spent in it)"
                )
        return data

    @property
    def input_lens(self) -> list[int]:
        return [level.input_len for level in self.levels]

    def check_sequence_len(self, sequence_len: int) -> None:
        """No level may ask for more tokens than the model is trained on."""
        for i, level in enumerate(self.levels):
            if level.input_len > sequence_len:
                raise ValueError(
                    f"curriculum.levels[{i}].input_len: got {level.input_len}, above "
                    f"sequence_len {sequence_len}; use at most {sequence_len} or raise sequence_len"
                )
