"""What the experiment measures from a run's log and evals, and the intervals it puts on them.

Compute is counted from what was fed (rank 0's JSONL: tokens and len_sq per step, measured from
the batches) with the package's one FLOPs function (axolotl_curriculum.core.flops): 6N per token plus
attention's term, quadratic in each example's length.
"""

from __future__ import annotations

import math

import numpy as np

from axolotl_curriculum.core.config import SenseGrad
from axolotl_curriculum.core.flops import fed_flops
from axolotl_curriculum.core.sense_grad import SpikeDetector


def compute(records: list[dict], model_config) -> dict[str, np.ndarray]:
    """Cumulative tokens and training FLOPs after each step (index = step - 1)."""
    tokens = np.array([r["tokens"] for r in records], dtype=np.float64)
    len_sq = np.array([r.get("len_sq", r["tokens"] * r["max_example_len"]) for r in records],
                      dtype=np.float64)
    return {"tokens": np.cumsum(tokens), "flops": np.cumsum(fed_flops(model_config, tokens, len_sq))}


def best(evals) -> float:
    losses = [loss for _, loss in evals if math.isfinite(loss)]
    return min(losses) if losses else math.nan


def final(evals) -> float:
    return evals[-1][1] if evals else math.nan


def at_evals(evals, cum: np.ndarray) -> list[tuple[float, float]]:
    """(compute spent, eval loss) at each eval; an eval at step 0 (before training) spent none."""
    return [(float(cum[step - 1]) if step > 0 else 0.0, loss)
            for step, loss in evals if step - 1 < len(cum)]


def to_target(evals, cum: np.ndarray, target: float) -> float:
    """The compute at which the eval loss first reaches `target`, interpolated linearly in
    compute between the two evals around the crossing (evals are every few steps)."""
    prev = None
    for here, loss in at_evals(evals, cum):
        if loss <= target:
            if prev is None or prev[1] <= loss:
                return here
            share = (prev[1] - target) / (prev[1] - loss)
            return float(prev[0] + share * (here - prev[0]))
        prev = (here, loss)
    return math.nan


def loss_at(evals, cum: np.ndarray, spent: float) -> float:
    """The eval loss after `spent` compute, interpolated linearly in compute between the evals
    around it (nan beyond the last eval): the other side of `to_target`."""
    points = at_evals(evals, cum)
    if not points or spent > points[-1][0] or not all(math.isfinite(v) for _, v in points):
        return math.nan
    return float(np.interp(spent, [c for c, _ in points], [v for _, v in points]))


def ratio_interval(base: list[float], arm: list[float], level: float = 0.95):
    """baseline compute / arm compute (geometric means), with a Welch t interval on the logs.

    Returns (ratio, low, high); the interval is nan unless both sides have 2+ finite values."""
    from scipy import stats

    b = np.log([x for x in base if x > 0 and math.isfinite(x)])
    a = np.log([x for x in arm if x > 0 and math.isfinite(x)])
    if not len(b) or not len(a):
        return math.nan, math.nan, math.nan
    diff = b.mean() - a.mean()
    if len(b) < 2 or len(a) < 2:
        return math.exp(diff), math.nan, math.nan
    vb, va = b.var(ddof=1) / len(b), a.var(ddof=1) / len(a)
    se = math.sqrt(vb + va)
    if se == 0:
        return math.exp(diff), math.exp(diff), math.exp(diff)
    df = (vb + va) ** 2 / (vb ** 2 / (len(b) - 1) + va ** 2 / (len(a) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return math.exp(diff), math.exp(diff - half), math.exp(diff + half)


def paired_interval(base: list[float], arm: list[float], level: float = 0.95):
    """baseline / arm compute, paired by seed (the same data order and initialisation on both
    sides): the geometric mean of the per-seed ratios with a t interval on their logs. Pairs
    with a side that never reached its target are left out. Returns (ratio, low, high)."""
    from scipy import stats

    logs = np.array([math.log(b / a) for b, a in zip(base, arm)
                     if b > 0 and a > 0 and math.isfinite(b) and math.isfinite(a)])
    if not len(logs):
        return math.nan, math.nan, math.nan
    mean = float(logs.mean())
    if len(logs) < 2:
        return math.exp(mean), math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def mean_interval(values: list[float], level: float = 0.95):
    """Mean with a t interval over seeds: (mean, half-width); half-width nan below 2 values."""
    from scipy import stats

    v = np.array([x for x in values if math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return math.nan, math.nan
    if len(v) < 2:
        return float(v[0]), math.nan
    return float(v.mean()), float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def spikes(records: list[dict]) -> int:
    """Steps the sense_grad detector calls a spike (gradient norm or loss far above its EMA)."""
    cfg = SenseGrad()
    detect = SpikeDetector(cfg.ema_beta, cfg.grad_spike_factor, cfg.loss_spike_factor)
    return int(sum(detect(r["grad_norm"] or math.nan, r["loss"] or math.nan) for r in records))


def grad_cv(records: list[dict], seq: int, tail: float = 0.6) -> float:
    """Gradient-norm coefficient of variation over the last `tail` of the steps, full-length
    steps only: short rows change the norm's scale and early steps are turbulent for every
    arm, so arms are compared over the same late window at the same length (the staged arms'
    short levels take the first 40%)."""
    late = records[int(len(records) * (1 - tail)):]
    g = np.array([r["grad_norm"] for r in late if r["input_len"] >= seq
                  and r["grad_norm"] is not None], dtype=np.float64)
    g = g[np.isfinite(g)]
    return float(g.std() / g.mean()) if len(g) > 2 and g.mean() > 0 else math.nan


def max_grad(records: list[dict]) -> float:
    g = [r["grad_norm"] for r in records if r["grad_norm"] is not None]
    return float(max(g)) if g else math.nan


def blow_up(evals) -> int | None:
    """The step of the first eval loss 0.5 nats above the best eval before it (None: none): a
    blow-up, even if a decaying schedule let the run recover by the end (x128 the tuned LR
    did: +4 nats, then back near the start)."""
    for i, (step, v) in enumerate(evals):
        if i and not v <= min(x for _, x in evals[:i]) + 0.5:  # a NaN eval counts
            return step
    return None


def diverged(records: list[dict], evals) -> bool:
    """A non-finite loss, no eval, or a blow-up."""
    losses = [r["loss"] for r in records]
    if not records or any(x is None or not math.isfinite(x) for x in losses):
        return True
    return not evals or not math.isfinite(evals[0][1]) or blow_up(evals) is not None
