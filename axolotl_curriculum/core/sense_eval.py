"""SENSE_EVAL's verdict: has the model recovered at its current level, by the probes?

Llama 3 (arXiv 2407.21783, section 3.4) ends a length stage when short-context evaluations have
recovered and needle-in-a-haystack is solved at that length. Here: the `short` probe's loss is at
most `short_tolerance` (relative) above its value measured just before the level began, and the
passkey accuracy at the level's length is at least `passkey_min`. Pure host code over values
already reduced across ranks, so every rank reaches the same verdict.
"""

from __future__ import annotations

from .config import Curriculum
from .names import SHORT, passkey_key


def gate_length(curriculum: Curriculum, level: int) -> int | None:
    """The passkey length a level is judged at: the longest probe length within its input_len."""
    fits = [n for n in curriculum.passkey_lengths() if n <= curriculum.input_lens[level]]
    return fits[-1] if fits else None


class EvalVerdicts:
    """The short probe's value before each stay in a level, and the verdict on fresh probes."""

    def __init__(self, curriculum: Curriculum):
        self.curriculum, self.settings = curriculum, curriculum.sense_eval
        self.before: dict[int, float] = {}  # first 0-based step of a stay -> short loss before it

    def note_start(self, start: int, values: dict) -> None:
        if SHORT in values and start not in self.before:
            self.before[start] = values[SHORT]

    def verdict(self, level: int, start: int, values: dict) -> tuple[bool, str, dict]:
        """(passed, reason, the numbers behind it) for the stay that began at `start`."""
        s, reasons, stats = self.settings, [], {}
        if s.short_tolerance is not None:
            now, before = values.get(SHORT), self.before.get(start)
            stats.update(short=now, short_before=before)
            if now is None or before is None:
                reasons.append("no short probe before the level began")
            elif not now <= before * (1 + s.short_tolerance):
                reasons.append(f"short {now:.4g} > {before:.4g} x (1 + {s.short_tolerance})")
        if s.passkey_min is not None:
            length = gate_length(self.curriculum, level)
            accuracy = values.get(passkey_key(length)) if length is not None else None
            stats.update(passkey_length=length, passkey=accuracy)
            if accuracy is None:
                reasons.append(f"no passkey probe within input_len {self.curriculum.input_lens[level]}")
            elif accuracy < s.passkey_min:
                reasons.append(f"passkey@{length} {accuracy:.3g} < {s.passkey_min}")
        if reasons:
            return False, "; ".join(reasons), stats
        parts = []
        if s.short_tolerance is not None:
            parts.append(f"short {stats['short']:.4g} within {s.short_tolerance} of "
                         f"{stats['short_before']:.4g}")
        if s.passkey_min is not None:
            parts.append(f"passkey@{stats['passkey_length']} {stats['passkey']:.3g} >= "
                         f"{s.passkey_min}")
        return True, "recovered: " + ", ".join(parts), stats

    def state_dict(self) -> dict:
        return {"before": {str(k): v for k, v in self.before.items()}}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.before = {int(k): v for k, v in state["before"].items()}
