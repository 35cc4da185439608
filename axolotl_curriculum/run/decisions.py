"""sense_grad's decisions during a run: the gate fed from device statistics, read once per check.

Each step's gradient norm and loss stay on the device until the gate checks (every
`check_every` steps); then they are averaged over ranks in one collective, so every rank takes
the same decision at the same step. A decision reaches the data `delay` steps later: the
loader plans that far ahead (`switch_delay`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from ..core.config import Curriculum
from ..core.schedule import Timeline
from ..core.sense_grad import Gate

logger = logging.getLogger(__name__)
GATE_PREFETCH = 2  # per worker, with sense_grad: bounds how far the data runs ahead of decisions
# the gate's window statistics that also go to the trainer's log line
METRIC_STATS = ("grad_cv", "spikes", "loss_slope")


def switch_delay(workers: int, grad_accum: int) -> int:
    """Steps from a decision to the first step fed at the new level.

    The loader's main process plans at most workers x prefetch micro-batches ahead, plus one
    held by accelerate and one being fetched; a step needs gradient accumulation of them.
    """
    return 1 + math.ceil((workers * GATE_PREFETCH + 2) / grad_accum)


class Decisions:
    """The gate of one run on one rank, with the statistics it has not read yet."""

    def __init__(self, curriculum: Curriculum, timeline: Timeline, delay: int,
                 reduce_mean: Callable[[torch.Tensor], torch.Tensor], rank: int):
        self.gate = Gate(curriculum, timeline, delay)
        self.check_every = curriculum.sense_grad.check_every
        self.reduce_mean, self.rank = reduce_mean, rank
        self._pending: list[torch.Tensor] = []
        self.last: dict[str, Any] = {}  # the latest decision's log fields

    def observe(self, global_step: int, grad_norm: torch.Tensor, loss: torch.Tensor,
                annotate: Callable[..., None]) -> None:
        """A step's device statistics (no host read); checks when the step is due."""
        self._pending.append(torch.stack([grad_norm, loss]))
        if global_step % self.check_every == 0:
            self.check(global_step, annotate)

    def sync(self, global_step: int) -> None:
        """Read the pending per-step statistics, averaged over ranks, into the gate."""
        if not self._pending:
            return
        values = self.reduce_mean(torch.stack(self._pending))
        first = global_step - len(self._pending)
        for k, (grad, loss) in enumerate(values.cpu().tolist()):
            self.gate.observe(first + k, grad, loss)
        self._pending = []

    def check(self, global_step: int, annotate: Callable[..., None]) -> None:
        """Decide at `global_step`; `annotate(step, **fields)` puts the decision in the log."""
        self.sync(global_step)
        decision = self.gate.decide(global_step)
        fields = {"decision": decision.action, "reason": decision.reason, **decision.stats}
        annotate(global_step, **fields)
        self.last = fields
        if self.rank == 0 and decision.action in ("advance", "backoff"):
            logger.info("curriculum: step %d: %s: %s", global_step, decision.action,
                        decision.reason)

    def metrics(self) -> dict[str, Any]:
        return {f"curriculum/{key}": self.last[key] for key in METRIC_STATS if key in self.last}

    def state_dict(self) -> dict:
        return self.gate.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.gate.load_state_dict(state)
