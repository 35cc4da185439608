"""SENSE_GRAD: decide from gradient and loss statistics when a level has settled.

Pure host code over floats that the trainer adapter has already reduced across ranks, read
once per check (every `check_every` steps), so every rank takes the same decision at the same
step and nothing here touches the training hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import Curriculum, SenseGrad
from .schedule import Timeline


@dataclass
class Decision:
    step: int          # 1-based optimizer step after which it was taken
    level: int
    action: str        # advance | hold | backoff | pending | last_level
    reason: str
    stats: dict = field(default_factory=dict)


class SpikeDetector:
    """Flags a step whose gradient norm or loss jumps far above its running mean (EMA).

    Non-finite values are always spikes and never enter the means.
    """

    def __init__(self, beta: float, grad_factor: float, loss_factor: float):
        self.beta, self.grad_factor, self.loss_factor = beta, grad_factor, loss_factor
        self.ema_grad: float | None = None
        self.ema_loss: float | None = None

    def __call__(self, grad_norm: float, loss: float) -> bool:
        if not (math.isfinite(grad_norm) and math.isfinite(loss)):
            return True
        spike = ((self.ema_grad is not None and grad_norm > self.grad_factor * self.ema_grad)
                 or (self.ema_loss is not None and loss > self.loss_factor * self.ema_loss))
        b = self.beta
        self.ema_grad = grad_norm if self.ema_grad is None else b * self.ema_grad + (1 - b) * grad_norm
        self.ema_loss = loss if self.ema_loss is None else b * self.ema_loss + (1 - b) * loss
        return spike


@dataclass
class _Stay:
    """Statistics of the current stay in a level."""

    start: int
    grad: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    spike: list[bool] = field(default_factory=list)


class Gate:
    """The decisions of sense_grad and/or sense_eval (the eval verdict comes from outside:
    sense_eval.py); with both, `sense_eval.combine` says whether both must pass or either."""

    def __init__(self, curriculum: Curriculum, timeline: Timeline, delay: int):
        self.uses_grad = curriculum.sense_grad is not None
        self.cfg = curriculum.sense_grad or SenseGrad(backoff=False)
        self.curriculum = curriculum
        self.timeline = timeline
        self.delay = delay          # steps from a decision to the first step fed at the new level
        self.stay = _Stay(start=0)
        cfg = self.cfg
        self.spikes = SpikeDetector(cfg.ema_beta, cfg.grad_spike_factor, cfg.loss_spike_factor)
        self.backed_off: list[int] = []
        self.decisions: list[Decision] = []

    # -- statistics ---------------------------------------------------------------------------
    def observe(self, step: int, grad_norm: float, loss: float) -> bool:
        """Record one finished 0-based step; return whether it was a spike."""
        _, start = self.timeline.position(step)
        if start != self.stay.start:
            self.stay = _Stay(start=start)  # the running means carry over: a jump shows as spikes
        spike = self.spikes(grad_norm, loss)
        self.stay.grad.append(grad_norm)
        self.stay.loss.append(loss)
        self.stay.spike.append(spike)
        return spike

    def window_stats(self) -> dict:
        cfg = self.cfg
        grad = np.array(self.stay.grad[cfg.settle_steps:][-cfg.window:], dtype=np.float64)
        loss = np.array(self.stay.loss[cfg.settle_steps:][-cfg.window:], dtype=np.float64)
        spikes = int(sum(self.stay.spike[cfg.settle_steps:][-cfg.window:]))
        stats = {"window": int(len(grad)), "spikes": spikes, "grad_cv": math.nan,
                 "loss_slope": math.nan}
        ok = np.isfinite(grad) & np.isfinite(loss)
        if ok.sum() >= 3:
            g, lo = grad[ok], loss[ok]
            stats["grad_cv"] = float(g.std() / g.mean()) if g.mean() > 0 else math.inf
            slope = np.polyfit(np.arange(len(lo), dtype=np.float64), lo, 1)[0]
            stats["loss_slope"] = float(slope / abs(lo.mean())) if lo.mean() != 0 else math.inf
        return stats

    # -- decisions ----------------------------------------------------------------------------
    def decide(self, step: int, verdict: tuple[bool, str] | None = None) -> Decision:
        """Take the decision after 1-based step `step` (all its statistics observed);
        `verdict`: sense_eval's on the latest probes of this stay (None: none yet)."""
        cfg = self.cfg
        last = step - 1
        level, start = self.timeline.position(last)
        done = step - start
        stats = {**self.window_stats(), "steps_in_level": done}

        def out(action, reason):
            decision = Decision(step, level, action, reason, stats)
            self.decisions.append(decision)
            return decision

        if self.timeline.pending_after(last):
            return out("pending", "a switch is already on its way to the data")
        if level < self.timeline.last_level and self.timeline.level_at(last + self.delay) != level:
            return out("pending", "max_steps reached: the cap switches the level")
        early = self.stay.spike[: cfg.settle_steps]
        back = self._level_below(level)
        if (cfg.backoff and back is not None and level not in self.backed_off
                and done <= cfg.settle_steps + cfg.check_every  # the first check after a switch
                and sum(early) >= cfg.backoff_spikes):
            self.backed_off.append(level)
            self.timeline.switch(last + self.delay, back, cap=cfg.backoff_steps)
            return out("backoff", f"{sum(early)} spikes in the {len(early)} steps after the switch;"
                                  f" back to level {back} for {cfg.backoff_steps} steps")
        if level == self.timeline.last_level:
            return out("last_level", "the last level runs to the end")
        if done < self.curriculum.min_steps(level):
            return out("hold", f"min_steps: {done} < {self.curriculum.min_steps(level)}")
        go, why = self._combined(stats, verdict)
        if not go:
            return out("hold", why)
        self.timeline.switch(last + self.delay, level + 1)
        return out("advance", f"{why}; level {level + 1} from step {last + self.delay + 1}")

    def _combined(self, stats: dict, verdict: tuple[bool, str] | None) -> tuple[bool, str]:
        """Whether to advance, and why: sense_grad's statistics and/or sense_eval's verdict."""
        settled = self._settled(stats) if self.uses_grad else None
        sense_eval = self.curriculum.sense_eval
        if sense_eval is None:
            return settled
        passed = verdict or (False, "no probe in this level yet")
        if settled is None:
            return passed
        both = f"sense_grad: {settled[1]}; sense_eval: {passed[1]}"
        if sense_eval.combine == "both":
            return settled[0] and passed[0], both
        return settled[0] or passed[0], both

    def _settled(self, stats: dict) -> tuple[bool, str]:
        cfg = self.cfg
        if stats["window"] < 3:
            return False, "collecting statistics after the switch"
        reasons = []
        if not stats["grad_cv"] <= cfg.max_grad_cv:
            reasons.append(f"grad_cv {stats['grad_cv']:.3g} > {cfg.max_grad_cv}")
        if stats["spikes"] > cfg.max_spikes:
            reasons.append(f"spikes {stats['spikes']} > {cfg.max_spikes}")
        if not stats["loss_slope"] <= cfg.max_loss_slope:
            reasons.append(f"loss_slope {stats['loss_slope']:.3g} > {cfg.max_loss_slope}")
        if reasons:
            return False, "; ".join(reasons)
        return True, (f"settled: grad_cv {stats['grad_cv']:.3g}, spikes {stats['spikes']},"
                      f" loss_slope {stats['loss_slope']:.3g}")

    def _level_below(self, level: int) -> int | None:
        """The nearest lower level in use (a level with max_steps 0 was switched off)."""
        below = [k for k in range(level) if self.timeline.max_steps[k] != 0]
        return below[-1] if below else None

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"stay": vars(self.stay), "ema_grad": self.spikes.ema_grad,
                "ema_loss": self.spikes.ema_loss, "backed_off": self.backed_off}

    def load_state_dict(self, state: dict) -> None:
        self.stay = _Stay(**state["stay"])
        self.spikes.ema_grad, self.spikes.ema_loss = state["ema_grad"], state["ema_loss"]
        self.backed_off = list(state["backed_off"])
