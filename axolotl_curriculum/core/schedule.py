"""Which level is in effect at each optimizer step."""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Segment:
    """From optimizer step `start` (0-based) on, train at `level`.

    A level ends after `cap` steps (default: its `max_steps`) and the next one begins, so a step
    schedule is the single segment (0, 0) and every cap switch is exact and known in advance.
    """

    start: int
    level: int
    cap: int | None = None


@dataclass
class Timeline:
    """The single source of truth for levels, shared by the data plan, the gate and the logs.

    Decisions append segments; a checkpoint stores them, so a resumed run replays the same data.
    """

    input_lens: list[int]
    max_steps: list[int | None]
    segments: list[Segment] = field(default_factory=lambda: [Segment(0, 0)])

    @property
    def last_level(self) -> int:
        return len(self.input_lens) - 1

    def position(self, step: int) -> tuple[int, int]:
        """(level, first step of that level's current stay) at a 0-based step."""
        i = max(bisect.bisect_right([s.start for s in self.segments], step) - 1, 0)
        seg = self.segments[i]
        level, start = seg.level, seg.start
        cap = seg.cap if seg.cap is not None else self.max_steps[level]
        while cap is not None and level < self.last_level and step >= start + cap:
            start, level = start + cap, level + 1
            cap = self.max_steps[level]
        return level, start

    def level_at(self, step: int) -> int:
        return self.position(step)[0]

    def switch(self, start: int, level: int, cap: int | None = None) -> None:
        if start < self.segments[-1].start:
            raise ValueError("a switch cannot be placed before an earlier one")
        self.segments.append(Segment(start, level, cap))

    def pending_after(self, step: int) -> bool:
        return self.segments[-1].start > step

    def state_dict(self) -> dict:
        return {"segments": [asdict(s) for s in self.segments]}

    def load_state_dict(self, state: dict) -> None:
        self.segments = [Segment(**s) for s in state["segments"]]
