"""The gate's decisions during a run: sense_grad fed from device statistics, read once per
check, and sense_eval fed the probes' values.

Each step's gradient norm and loss stay on the device until the gate checks (every
`check_every` steps); then they are averaged over ranks in one collective, so every rank takes
the same decision at the same step. The probes come reduced over ranks (probes.py); sense_eval
decides every `sense_eval.every` steps on them. A decision reaches the data `delay` steps
later: the loader plans that far ahead (`switch_delay`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from ..core.config import Curriculum
from ..core.names import METRIC
from ..core.schedule import Timeline
from ..core.sense_eval import EvalVerdicts
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
        self.gate, self.timeline = Gate(curriculum, timeline, delay), timeline
        self.check_every = curriculum.sense_grad.check_every if curriculum.sense_grad else None
        self.eval_every = None
        if curriculum.sense_eval is not None:
            self.eval_every = curriculum.sense_eval.every or curriculum.probes.every
        self.verdicts = EvalVerdicts(curriculum) if curriculum.sense_eval is not None else None
        self.verdict: dict | None = None  # sense_eval's latest: {start, passed, reason, stats}
        self.reduce_mean, self.rank = reduce_mean, rank
        self._pending: list[torch.Tensor] = []
        self.last: dict[str, Any] = {}  # the latest decision's log fields

    def probed(self, global_step: int, values: dict) -> None:
        """The probes measured after `global_step` (reduced): a stay starting at the next step
        keeps its short value as `before`; a verdict on the current stay (sense_eval)."""
        if self.verdicts is None:
            return
        if self.timeline.position(global_step)[1] == global_step:
            self.verdicts.note_start(global_step, values)
        if global_step > 0:
            level, start = self.timeline.position(global_step - 1)
            passed, reason, stats = self.verdicts.verdict(level, start, values)
            self.verdict = {"start": start, "passed": passed, "reason": reason, "stats": stats}

    def observe(self, global_step: int, grad_norm: torch.Tensor, loss: torch.Tensor,
                annotate: Callable[..., None]) -> None:
        """A step's device statistics (no host read); checks when the step is due."""
        self._pending.append(torch.stack([grad_norm, loss]))
        if ((self.check_every and global_step % self.check_every == 0)
                or (self.eval_every and global_step % self.eval_every == 0)):
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
        verdict, eval_stats = None, {}
        if self.verdict is not None and \
                self.verdict["start"] == self.timeline.position(global_step - 1)[1]:
            verdict = (self.verdict["passed"], self.verdict["reason"])
            eval_stats = {key: value for key, value in self.verdict["stats"].items()
                          if key not in ("short", "passkey")}  # those are on the line as probes
        decision = self.gate.decide(global_step, verdict)
        fields = {"decision": decision.action, "reason": decision.reason, **decision.stats,
                  **eval_stats}
        annotate(global_step, **fields)
        self.last = fields
        if self.rank == 0 and decision.action in ("advance", "backoff"):
            logger.info("curriculum: step %d: %s: %s", global_step, decision.action,
                        decision.reason)

    def metrics(self) -> dict[str, Any]:
        return {f"{METRIC}{key}": self.last[key] for key in METRIC_STATS if key in self.last}

    def state_dict(self) -> dict:
        state = self.gate.state_dict()
        if self.verdicts is not None:
            state["sense_eval"] = {**self.verdicts.state_dict(), "verdict": self.verdict}
        return state

    def load_state_dict(self, state: dict | None) -> None:
        if state is not None:
            self.gate.load_state_dict(state)
            if self.verdicts is not None and state.get("sense_eval"):
                self.verdicts.load_state_dict(state["sense_eval"])
                self.verdict = state["sense_eval"]["verdict"]
