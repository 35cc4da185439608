"""The checks every block of `curriculum:` repeats, each with the one message a user can act on.

A wrong value is named by its key (`where`), what was given, and what to write instead, so the
fix is in the message; every check raises `CurriculumError`. `None` means "not set" to the
number and choice checks: the caller decides whether a key may be left out.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from .errors import CurriculumError


def check_keys(where: str, data: dict, allowed: list[str]) -> None:
    """A misspelt key is the commonest mistake: name the closest allowed key and list them all."""
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise CurriculumError(
                f"{where}: unknown key '{key}'; {hint}allowed keys: {', '.join(allowed)}"
            )


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML's `true` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(where: str, value: Any, low: int) -> None:
    """An integer of at least `low`, or None (not set)."""
    if value is not None and (not is_int(value) or value < low):
        raise CurriculumError(f"{where}: got {value!r}; use an integer >= {low}")


def check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    """One of `choices`, or None (not set)."""
    if value is not None and value not in choices:
        raise CurriculumError(f"{where}: got {value!r}; use one of {', '.join(choices)}")


def check_float(where: str, value: Any, low: float, high: float = math.inf,
                low_open: bool = False) -> None:
    """A finite number in [low, high] ((low, high] with `low_open`); bools and NaN are refused."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and value <= high)
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        bound += f" and <= {high}" if high != math.inf else ""
        raise CurriculumError(f"{where}: got {value!r}; use a number {bound}")


def check_bool(where: str, value: Any, hint: str = "") -> None:
    """true or false as YAML writes them (pydantic would take "no" or 0 as False); `hint` says
    what the key does, for the keys whose effect is not obvious from the name."""
    if not isinstance(value, bool):
        raise CurriculumError(f"{where}: got {value!r}; use true or false{hint}")
