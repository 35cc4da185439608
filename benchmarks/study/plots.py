"""The experiment's figures, one PNG each: eval loss against FLOPs (or wall time) with a band
over seeds, the stability sweep and the largest stable LR by length ratio, loss per length
bucket, passkey heat maps and loss by position."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _axes(size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _save(fig, ax, path: Path, title: str, xlabel: str, ylabel: str, legend: int = 7) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


FLOPS_AXIS = "training FLOPs (6N per token + attention, from what was fed)"
WALL_AXIS = "wall time since the first step (s; evals and probes included)"


def loss_vs_flops(groups: dict[str, list[tuple[np.ndarray, np.ndarray]]], target: float,
                  path: Path, title: str, xlabel: str = FLOPS_AXIS) -> Path:
    """groups: arm -> per seed (compute at each eval, eval loss). Mean over seeds on a common
    compute grid (FLOPs, or seconds), band = min..max over seeds."""
    fig, ax = _axes((8, 5))
    for i, (arm, curves) in enumerate(groups.items()):
        curves = [c for c in curves if len(c[0]) > 1]
        if not curves:
            continue
        hi = min(c[0][-1] for c in curves)
        lo = max(c[0][0] for c in curves)
        grid = np.linspace(lo, hi, 50)
        ys = np.array([np.interp(grid, x, y) for x, y in curves])
        # ten colours, then the same ten dashed: every arm its own line
        ax.plot(grid, ys.mean(0), color=f"C{i % 10}", ls="-" if i < 10 else "--",
                label=f"{arm} ({len(curves)} seeds)", lw=1.2)
        ax.fill_between(grid, ys.min(0), ys.max(0), color=f"C{i % 10}", alpha=0.15)
    if math.isfinite(target):
        ax.axhline(target, color="k", ls=":", lw=1, label="target: tuned baseline's best")
    return _save(fig, ax, path, title, xlabel, "eval loss (held-out, full length)")


def _by_condition(points: dict[tuple[str, str], dict[float, float]], path: Path, title: str,
                  xlabel: str, ylabel: str, log_y: bool = False) -> Path:
    """points: (arm, condition) -> {x: y}; a colour per arm, a line style per condition, x on
    a log-2 axis."""
    fig, ax = _axes((7, 4.5))
    arms = list(dict.fromkeys(a for a, _ in points))
    conditions = list(dict.fromkeys(c for _, c in points))
    for (arm, cond), pts in points.items():
        xs = sorted(pts)
        k = arms.index(arm)  # later arms drawn thinner and smaller: equal values stay visible
        ax.plot(xs, [pts[x] for x in xs], marker="o", color=f"C{k % 10}",
                ms=max(3, 10 - 2.5 * k), lw=max(1.0, 3.5 - 1.0 * k),
                ls=("-", "--", ":", "-.")[conditions.index(cond) % 4], label=f"{arm}, {cond}")
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log", base=2)
    return _save(fig, ax, path, title, xlabel, ylabel)


def sweep(points: dict[tuple[str, str], dict[float, float]], path: Path, title: str) -> Path:
    """points: (arm, condition) -> {learning rate multiplier: best eval loss (nan: diverged)}."""
    return _by_condition(points, path, title, "learning rate, x the tuned baseline's",
                         "best eval loss (gap: diverged)")


def ratios(points: dict[tuple[str, str], dict[float, float]], path: Path, title: str) -> Path:
    """points: (arm family, condition) -> {length ratio: largest stable LR multiple; nan, a
    gap: diverged at the lowest multiple swept}; ratio 1 is the baseline (full length from
    step 1)."""
    return _by_condition(points, path, title,
                         "length ratio (sequence_len / first input_len; 1: baseline)",
                         "largest stable LR (x the tuned one)", log_y=True)


def buckets(values: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """values: arm -> bucket or task -> mean loss over seeds."""
    fig, ax = _axes((10, 4))
    names = list(values)
    keys = list(next(iter(values.values()), {}))
    width = 0.8 / len(keys)
    for j, k in enumerate(keys):
        ax.bar(np.arange(len(names)) + j * width, [values[n].get(k, math.nan) for n in names],
               width, label=k)
    ax.set_xticks(np.arange(len(names)) + width * (len(keys) - 1) / 2, names, rotation=35,
                  ha="right")
    lows = [v for n in names for v in values[n].values() if math.isfinite(v)]
    if lows:
        ax.set_ylim(min(lows) * 0.95, max(lows) * 1.02)
    return _save(fig, ax, path, title, "", "answer loss (mean per answer token)", legend=8)


def passkey_heatmaps(values: dict[str, dict[tuple[int, float], float]], path: Path,
                     title: str) -> Path:
    """values: arm -> (prompt length, needle depth) -> passkey accuracy (mean over seeds); one
    panel per arm, lengths across, depths down, the same colour scale (0..1) in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(values)
    lengths = sorted({L for v in values.values() for L, _ in v})
    depths = sorted({d for v in values.values() for _, d in v})
    cols = min(3, len(arms))
    rows = math.ceil(len(arms) / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, layout="constrained",
                             figsize=(3.6 * cols, 0.9 + rows * (0.8 + 0.4 * len(depths))))
    for ax in axes.flat[len(arms):]:
        ax.axis("off")
    for ax, arm in zip(axes.flat, arms):
        grid = np.array([[values[arm].get((L, d), math.nan) for L in lengths] for d in depths])
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if v < 0.6 else "k")
        ax.set_xticks(range(len(lengths)), [str(L) for L in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=7)
        ax.set_title(arm, fontsize=9)
    fig.supxlabel("prompt length (tokens)", fontsize=9)
    fig.supylabel("needle depth", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8, label="passkey accuracy")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def position_loss(values: dict[str, dict[int, float]], path: Path, title: str) -> Path:
    """values: arm -> last position of a bucket -> held-out loss there (mean over seeds)."""
    fig, ax = _axes((8, 4.5))
    for i, (arm, pts) in enumerate(values.items()):
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", ms=3, color=f"C{i % 10}",
                ls="-" if i < 10 else "--", label=arm, lw=1.2)
    ax.set_xscale("log", base=2)
    return _save(fig, ax, path, title, "position in the document (bucket end, tokens; each "
                 "bucket starts where the last ended)", "held-out loss at those positions")

