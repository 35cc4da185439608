"""The report's figures (docs/report.md), one PNG each, drawn on matplotlib's Agg canvas.

No pyplot: each figure is a plain `Figure`, so drawing touches no global backend state.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .run_files import STATS, Probed, Run, segments

DPI = 110
PASSKEY_FIGURE = "probes_passkey.png"          # passkey accuracy, length x depth, per level end
POSITION_FIGURE = "probes_position_loss.png"   # loss per position bucket, per level end
PANELS_PER_ROW = 4


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _bands(ax, run: Run, x_span, named: bool = True) -> None:
    """Shade each stretch of steps at one level; `x_span(first, last)` gives its x extent."""
    lens, colors, seen = run.level_input_lens(), colormaps["tab10"], set()
    for level, first, last in segments(run):
        label = f"level {level} (input_len {lens.get(level)})"
        ax.axvspan(*x_span(first, last), color=colors(level % 10), alpha=0.15, lw=0,
                   label=label if named and level not in seen else None)
        seen.add(level)


def _by_step(ax, run: Run, named: bool = True) -> None:
    _bands(ax, run, lambda first, last: (first - 0.5, last + 0.5), named)
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)


def _save(fig: Figure, out: Path, name: str) -> str:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    return name


def loss_figure(run: Run, out: Path) -> str:
    steps = [s.step for s in run.steps]
    ends, total = [], 0
    for s in run.steps:
        total += s.tokens
        ends.append(total)
    starts = [end - s.tokens for end, s in zip(ends, run.steps)]

    def x_span(first, last):
        return starts[bisect.bisect_left(steps, first)], ends[bisect.bisect_left(steps, last)]

    fig = Figure(figsize=(9, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax in (top, bottom):
        _bands(ax, run, x_span, named=ax is top)
        ax.grid(alpha=0.3)
    top.plot(ends, [_number(s.loss) for s in run.steps], lw=1, color="C0",
             label="train loss (log, mean over ranks)")

    def at(points):  # a step maps to the tokens fed up to it
        return [ends[max(bisect.bisect_right(steps, step) - 1, 0)] for step, _ in points]

    if run.eval_loss:
        top.plot(at(run.eval_loss), [loss for _, loss in run.eval_loss], "o", color="C3",
                 label="eval loss")
    short = [(p.step, p.short) for p in run.probes() if p.short is not None]
    if short:
        top.plot(at(short), [loss for _, loss in short], "s-", ms=3, lw=1, color="C4",
                 label="probe/short (held-out short rows)")
    top.set_ylabel("loss")
    top.legend(fontsize=8, loc="upper right")
    bottom.plot(ends, [_number(s.grad_norm) for s in run.steps], lw=1, color="C1",
                label="gradient norm")
    bottom.set_ylabel("gradient norm")
    bottom.set_xlabel("tokens fed (cumulative, all ranks)")
    bottom.legend(fontsize=8, loc="upper right")
    top.set_title("Loss and gradient norm against tokens; levels shaded")
    return _save(fig, out, "report_loss.png")


def _step_figure(run: Run) -> tuple[Figure, object, list[int]]:
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    _by_step(ax, run)
    return fig, ax, [s.step for s in run.steps]


def _finish(fig: Figure, ax, out: Path, name: str, ylabel: str, title: str) -> str:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out, name)


def lengths_figure(run: Run, out: Path) -> str:
    fig, ax, steps = _step_figure(run)
    ax.step(steps, [_number(s.head.get("input_len")) for s in run.steps], where="mid",
            color="black", lw=1.5, label="input_len (schedule)")
    ax.plot(steps, [s.max_example_len for s in run.steps], ".", ms=4, color="C0",
            label="longest example fed (max over ranks)")
    return _finish(fig, ax, out, "report_lengths.png", "tokens",
                   "input_len against the longest example actually fed")


def tokens_figure(run: Run, out: Path) -> str:
    fig, ax, steps = _step_figure(run)
    ax.plot(steps, [s.tokens for s in run.steps], lw=1, color="C0",
            label="tokens measured (sum over ranks)")
    planned = [_number(s.planned("tokens")) for s in run.steps]
    if any(not math.isnan(p) for p in planned):
        ax.plot(steps, planned, "--", lw=1, color="C2", label="tokens planned (rank 0, global)")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, out, "report_tokens.png", "tokens per optimizer step",
                   "Tokens per step")


def sense_grad_figure(run: Run, out: Path) -> str:
    decisions, limits = run.decisions(), run.thresholds()
    fig = Figure(figsize=(9, 7.5))
    axes = fig.subplots(len(STATS), 1, sharex=True)
    steps = [d["step"] for d in decisions]
    for ax, stat in zip(axes, STATS):
        _by_step(ax, run, named=ax is axes[0])
        ax.plot(steps, [_number(d.get(stat)) for d in decisions], "o-", ms=3, lw=1, color="C0",
                label=stat)
        ax.axhline(limits[f"max_{stat}"], color="C3", ls="--", lw=1,
                   label=f"max_{stat} {limits[f'max_{stat}']}")
        for action, color in (("advance", "C2"), ("backoff", "C3")):
            for i, d in enumerate(d for d in decisions if d["decision"] == action):
                ax.axvline(d["step"], color=color, lw=1.2, label=action if i == 0 else None)
        ax.set_ylabel(stat)
        ax.legend(fontsize=7, loc="upper right")
    for ax in axes[:-1]:
        ax.set_xlabel("")
    axes[0].set_title("sense_grad statistics at each check, against their thresholds")
    return _save(fig, out, "report_sense_grad.png")


def _tokens(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def _end_title(p: Probed) -> str:
    return f"level {p.level} end (step {p.step})"


def _heat_map(ax, p: Probed, lengths: list[int], depths: list[float]):
    """One level end's passkey accuracy: prompt length across, depth down, each cell written."""
    grid = np.array([[_number(p.depths.get((n, d))) for n in lengths] for d in depths])
    image = ax.imshow(grid, cmap=colormaps["viridis"].with_extremes(bad="0.9"), vmin=0, vmax=1,
                      aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, "-" if math.isnan(value) else f"{value:.2f}", ha="center", va="center",
                fontsize=8, color="black" if math.isnan(value) or value >= 0.5 else "white")
    ax.set_xticks(range(len(lengths)), [_tokens(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("key depth")
    ax.set_title(_end_title(p), fontsize=9)
    return image


def passkey_figure(run: Run, out: Path) -> str:
    ends = [p for p in run.level_ends().values() if p.depths]
    lengths = sorted({n for p in ends for n, _ in p.depths})
    depths = sorted({d for p in ends for _, d in p.depths})
    cols = min(len(ends), PANELS_PER_ROW)
    rows = -(-len(ends) // cols)
    fig = Figure(figsize=(1.5 + cols * (1.2 + 0.6 * len(lengths)),
                          0.8 + rows * (1.2 + 0.4 * len(depths))), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, p in zip(axes.flat, ends):
        image = _heat_map(ax, p, lengths, depths)
    for ax in axes.flat[len(ends):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, label="passkey exact match", shrink=0.9)
    fig.suptitle("Passkey accuracy at each level's end (-: not measured)")
    return _save(fig, out, PASSKEY_FIGURE)


def position_figure(run: Run, out: Path) -> str:
    ends = [p for p in run.level_ends().values() if p.position_loss]
    buckets = sorted({b for p in ends for b in p.position_loss})
    lens, colors = run.level_input_lens(), colormaps["tab10"]
    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for p in ends:
        have = [i for i, b in enumerate(buckets) if b in p.position_loss]
        ax.plot(have, [p.position_loss[buckets[i]] for i in have], "o-", lw=1.5, ms=4,
                color=colors(p.level % 10),
                label=f"{_end_title(p)}, input_len {lens.get(p.level)}")
    ax.set_xticks(range(len(buckets)), [f"{_tokens(lo)}-{_tokens(hi)}" for lo, hi in buckets])
    ax.set_xlabel("positions [lo, hi) of held-out long rows (buckets double in width)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Loss by position at each level's end")
    return _save(fig, out, POSITION_FIGURE)


def draw(run: Run, out: Path) -> list[tuple[str, str]]:
    """Draw every figure the run has data for into `out`; (title, file name) each."""
    figures = [("Loss and gradient norm against tokens", loss_figure(run, out)),
               ("input_len against the longest example fed", lengths_figure(run, out)),
               ("Tokens per step", tokens_figure(run, out))]
    if run.decisions():
        figures.append(("sense_grad statistics and decisions", sense_grad_figure(run, out)))
    ends = run.level_ends().values()
    if any(p.depths for p in ends):
        figures.append(("Passkey accuracy at each level's end", passkey_figure(run, out)))
    if any(p.position_loss for p in ends):
        figures.append(("Loss by position at each level's end", position_figure(run, out)))
    return figures
