"""Which level is in effect at each optimizer step."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class Timeline:
    """Level start steps, the single source of truth shared by the data and the logs.

    `starts[k]` is the first 0-based optimizer step of level k. A step schedule knows every start
    in advance, so the switch is exact. Kept as a list of starts (not a function of the config) so
    that later decisions can append to it and a checkpoint can restore it.
    """

    input_lens: list[int]
    starts: list[int] = field(default_factory=lambda: [0])

    @classmethod
    def from_max_steps(cls, input_lens: list[int], max_steps: list[int | None]) -> "Timeline":
        starts = [0]
        for steps in max_steps[:-1]:
            starts.append(starts[-1] + int(steps))
        return cls(list(input_lens), starts)

    def level_at(self, step: int) -> int:
        return bisect.bisect_right(self.starts, step) - 1

    def input_len_at(self, step: int) -> int:
        return self.input_lens[self.level_at(step)]

    @property
    def last_level(self) -> int:
        return len(self.input_lens) - 1
