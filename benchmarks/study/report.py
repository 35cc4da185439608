"""docs/results.md from the experiment's runs: every number with its seed count and interval."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from . import plots
from .arms import first_length
from .measures import (at_evals, best, blow_up, compute, diverged, final, grad_cv, loss_at, max_grad,
                       mean_interval, paired_interval, ratio_interval, spikes, to_target)
from .posthoc import compare
from .runs import Run

MARGIN = 0.01  # a grid cell within 1% of an arm's best eval loss counts as "as good"


def fmt(x, spec=".3f") -> str:
    missing = x is None or (isinstance(x, float) and not math.isfinite(x))
    return "n/a" if missing else format(x, spec)


def pm(values, spec=".3f") -> str:
    """mean ± 95% half-width over seeds (n)."""
    m, h = mean_interval(values)
    n = sum(math.isfinite(v) for v in values)
    spread = f" ± {fmt(h, spec)}" if math.isfinite(h) else ""
    return f"{fmt(m, spec)}{spread} (n={n})"


def ratio_cell(base, arm, interval=ratio_interval) -> tuple[str, str]:
    r, lo, hi = interval(base, arm)
    if not math.isfinite(r):
        return "n/a", "-"
    cell = f"{r:.2f}x [{fmt(lo, '.2f')}, {fmt(hi, '.2f')}]"
    verdict = ("-" if not math.isfinite(lo) else "yes, > 1" if lo > 1 else "yes, < 1" if hi < 1
               else "no: noise")
    return cell, verdict


class Setting:
    """One setting's runs with their measurements."""

    def __init__(self, res: dict):
        from transformers import AutoConfig

        self.res, self.s = res, res["setting"]
        self.model_config = AutoConfig.from_pretrained(self.s.model)
        self.equal = res["equal"]
        self._computed: dict[int, dict] = {}  # id(run) -> its cumulative counts, once per run

    def curve(self, run: Run, key: str = "flops") -> np.ndarray:
        """Cumulative `flops`, `tokens` or `wall` seconds after each step (index = step - 1)."""
        if key == "wall":  # interpolated between the logged steps
            steps, secs = zip(*([(0, 0.0)] + list(run.walls)))
            return np.interp(np.arange(1, len(run.records) + 1), steps, secs)
        if id(run) not in self._computed:
            self._computed[id(run)] = compute(run.records, self.model_config)
        return self._computed[id(run)][key]

    def runs(self, arm: str, knobs=None) -> list[Run]:
        knobs = knobs or self.equal
        return [r for r in self.res["main"] if r.arm == arm and r.knobs == knobs and r.ok]

    def target(self, pick=best) -> float:
        """The loss every tuned-baseline seed reached (the highest of their best / final)."""
        vals = [pick(r.evals) for r in self.runs("baseline")]
        vals = [v for v in vals if math.isfinite(v)]
        return max(vals) if vals else math.nan

    def spend(self, runs: list[Run], target: float, key: str) -> list[float]:
        return [to_target(r.evals, self.curve(r, key), target) for r in runs]

    def paired(self, runs: list[Run], key: str = "flops") -> tuple[list[float], list[float]]:
        """Per seed the baseline also ran: (its compute to its own best eval loss, the arm's
        compute to that same loss)."""
        base = {r.seed: r for r in self.runs("baseline")}
        pairs = [(base[r.seed], r) for r in runs if r.seed in base]
        return ([to_target(b.evals, self.curve(b, key), best(b.evals)) for b, _ in pairs],
                [to_target(a.evals, self.curve(a, key), best(b.evals)) for b, a in pairs])


def setting_section(st: Setting, out: Path, figures: list[str]) -> tuple[list[str], dict]:
    s, res = st.s, st.res
    name = s.name
    dims = st.model_config
    origin = {"scratch": " (from scratch)",
              "extend": f" (pretrained here at {s.data.get('base')} tokens on other source files "
                        "and passkey rows, cached)",
              "real": " (SmolLM2-135M-Instruct, pretrained by Hugging Face; bf16 on the CPU)"}
    lines = [f"## Setting: {name}", "",
             f"Model: llama {dims.num_hidden_layers} layers x {dims.hidden_size} hidden, "
             f"vocabulary {dims.vocab_size}"
             + origin.get(name, " (pretrained here on the general text, cached)")
             + (", LoRA r=16 on every linear layer" if name in ("lora", "real")
                else ", full weights")
             + f". sequence_len {s.seq}, packed, {s.mbs} rows per micro-batch, {s.steps} steps, "
             f"cosine schedule, base learning rate {s.lr:g}, eval every {s.eval_every} steps. "
             f"Data: {s.data['describe']}.", ""]
    # -- tuning grid
    grid = res["grid_knobs"]
    lines += ["### The (learning rate x warmup) grid, seed 0: best eval loss", "",
              "| arm | " + " | ".join(f"LR x{k.lr_mult:g}, warmup {k.warmup:.0%}" for k in grid)
              + " | tuned | cells within 1% of the arm's best |",
              "|---|" + "---|" * (len(grid) + 2)]
    for arm, knobs in res["tuned"].items():
        cells = {r.knobs: best(r.evals) for r in res["grid"] if r.arm == arm}
        top = cells[knobs]
        near = sum(1 for v in cells.values() if math.isfinite(v) and v <= top * (1 + MARGIN))
        lines.append(f"| {arm} | " + " | ".join(fmt(cells.get(k)) for k in grid)
                     + f" | {knobs.tag} | {near} of {len(grid)} |")
    lines += ["", "Every other arm runs at the tuned baseline's settings "
              f"({st.equal.tag}): equal settings. The other tuned arm is also run at its own "
              "tuned settings when they differ.", ""]
    # -- compute to target
    target, target_final = st.target(best), st.target(final)
    base_runs = st.runs("baseline")
    base_f = st.spend(base_runs, target, "flops")
    base_t = st.spend(base_runs, target, "tokens")
    base_ff = st.spend(base_runs, target_final, "flops")
    base_w = st.spend(base_runs, target, "wall")
    rows, summary = [], {}
    arms = [(a, st.equal) for a in dict.fromkeys(r.arm for r in res["main"])]
    arms += [(a, k) for a, k in res["tuned"].items() if a != "baseline" and k != st.equal]
    for arm, knobs in arms:
        rs = st.runs(arm, knobs)
        if not rs:
            continue
        label = arm if knobs == st.equal else f"{arm} (own tuning {knobs.tag})"
        f_cell, f_verdict = ratio_cell(base_f, st.spend(rs, target, "flops"))
        t_cell, _ = ratio_cell(base_t, st.spend(rs, target, "tokens"))
        w_cell, _ = ratio_cell(base_w, st.spend(rs, target, "wall"))
        ff_cell, _ = ratio_cell(base_ff, st.spend(rs, target_final, "flops"))
        p_base, p_arm = st.paired(rs)
        p_cell, p_verdict = ratio_cell(p_base, p_arm, paired_interval)
        p_reached = sum(math.isfinite(x) for x in p_arm)
        reached = sum(math.isfinite(x) for x in st.spend(rs, target, "flops"))
        wall = [r.seconds for r in rs]
        rows.append(f"| {label} | {pm([best(r.evals) for r in rs])} | "
                    f"{pm([final(r.evals) for r in rs])} | {f_cell} | {f_verdict} | {t_cell} | "
                    f"{w_cell} | "
                    f"{reached}/{len(rs)} | {p_cell} | "
                    f"{p_verdict} | {p_reached}/{len(p_arm)} | {ff_cell} | {pm(wall, '.0f')} |")
        summary[label] = {"flops_ratio": ratio_interval(base_f, st.spend(rs, target, "flops")),
                          "wall_ratio": ratio_interval(base_w, st.spend(rs, target, "wall")),
                          "paired": paired_interval(p_base, p_arm),
                          "reached": reached, "n": len(rs),
                          "best": mean_interval([best(r.evals) for r in rs])}
    lines += ["### Compute to the tuned baseline's best eval loss", "",
              f"Target: {fmt(target)}, the highest of the tuned baseline seeds' best eval losses "
              f"(their final: {fmt(target_final)}). Ratios are the baseline's compute over the "
              "arm's (geometric means over seeds; > 1: the arm needs less), 95% Welch t intervals "
              "on the logs; compute is interpolated between evals. An arm whose seeds did not all "
              "reach the target has a ratio over the seeds that did. *Paired*: per seed, the "
              "baseline's FLOPs to its own best eval loss over the arm's FLOPs to that loss, on "
              "the same seed (same data order): the seed-to-seed spread of the data order cancels; "
              "a t interval on the per-seed log ratios. *Wall time*: seconds from the first "
              "step to the target (the trainer's event clock; evals and probes during training "
              "count; runs two at a time on shared cores, so noisier than FLOPs).", "",
              "| arm | best eval loss | final eval loss | FLOPs ratio [95% CI] "
              "| interval excludes 1? | tokens ratio [95% CI] | wall-time ratio [95% CI] | reached "
              "| paired FLOPs ratio [95% CI] | excludes 1? | "
              "reached | FLOPs ratio to the baseline's final loss | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"] + rows + [""]
    lines += equal_compute(st, arms)
    timed = all(r.walls for arm, knobs in arms for r in st.runs(arm, knobs))
    for key, what in (("flops", "compute"), ("wall", "wall time"))[:2 if timed else 1]:
        curves = {}
        for arm, knobs in arms:
            label = arm if knobs == st.equal else f"{arm} (own tuning)"
            points = [at_evals(r.evals, st.curve(r, key)) for r in st.runs(arm, knobs)]
            curves[label] = [(np.array([c for c, _ in p]), np.array([v for _, v in p]))
                             for p in points]
        fig = f"results_{name}_loss_{key}.png"
        plots.loss_vs_flops(curves, target, out / fig, f"{name}: eval loss against {what}",
                            plots.FLOPS_AXIS if key == "flops" else plots.WALL_AXIS)
        figures.append(fig)
        lines += [f"![{fig}]({fig})", ""]
    # -- volatility at the tuned settings
    lines += ["### Volatility at the tuned settings", "",
              "| arm | spikes | gradient-norm CV, last 60% of the steps, full length "
              "| largest gradient norm |",
              "|---|---|---|---|"]
    for arm, knobs in arms:
        rs = st.runs(arm, knobs)
        label = arm if knobs == st.equal else f"{arm} (own tuning)"
        lines.append(f"| {label} | {pm([float(spikes(r.records)) for r in rs], '.1f')} | "
                     f"{pm([grad_cv(r.records, s.seq) for r in rs])} | "
                     f"{pm([max_grad(r.records) for r in rs], '.2f')} |")
    lines.append("")
    lines += probe_section(st, arms, out, figures)
    lines += control_section(st)
    lines += sweep_section(st, out, figures)
    lines += ratio_section(st, out, figures)
    lines += schedule_section(st)
    post_lines, post = same_solution(st, arms, out, figures)
    lines += post_lines
    summary["_target"] = target
    summary["_post"] = post
    return lines, summary


def equal_compute(st: Setting, arms) -> list[str]:
    """Arms that spent less than the baseline: per seed, the baseline's eval loss at the arm's
    total FLOPs (its own curve, interpolated) against the arm's final eval loss."""
    base = {r.seed: r for r in st.runs("baseline")}
    rows = []
    for arm, knobs in arms:
        pairs = [(base[r.seed], r) for r in st.runs(arm, knobs) if r.seed in base]
        if arm == "baseline" or not pairs:
            continue
        share = [st.curve(r)[-1] / st.curve(b)[-1] for b, r in pairs]
        if max(share) > 0.98:
            continue  # the same compute: the table above says it
        at = [loss_at(b.evals, st.curve(b), st.curve(r)[-1]) for b, r in pairs]
        ends = [final(r.evals) for _, r in pairs]
        diff = [a - e for a, e in zip(at, ends)]
        m, h = mean_interval(diff)
        verdict = ("noise" if not math.isfinite(h) or abs(m) <= h
                   else "the arm lower" if m > 0 else "the baseline lower")
        rows.append(f"| {arm} | {pm(share, '.2f')} | {pm(ends)} | {pm(at)} | {pm(diff, '.4f')} "
                    f"| {verdict} |")
    if not rows:
        return []
    return ["### At equal compute", "",
            "For arms that spent less: per seed, the baseline's eval loss when it had spent the "
            "arm's total FLOPs (its own eval curve, interpolated in compute), against the arm's "
            "final eval loss; difference = baseline's - arm's (> 0: the arm ends lower than the "
            "baseline was at the same compute), mean ± 95% t half-width over seeds.", "",
            "| arm | FLOPs, share of the baseline's | final eval loss | the baseline's at the "
            "same FLOPs | difference | verdict |", "|---|---|---|---|---|---|"] + rows + [""]


def last_probes(run: Run, every_key: bool = False) -> dict[str, float]:
    """The probe values on the run's last probed step (the run's end: probes run there);
    without `every_key`, the per-depth and chat-form passkey keys are left out."""
    probed = [r for r in run.records if any(k.startswith("probe/") for k in r)]
    return {k[len("probe/"):]: v for k, v in (probed[-1] if probed else {}).items()
            if k.startswith("probe/")
            and (every_key or ("/depth" not in k and "passkey_chat" not in k))}


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def probe_section(st: Setting, arms, out: Path, figures: list[str]) -> list[str]:
    """The arms' probes at their last step (docs/probes.md), where the arms ran probes:
    short-context loss, loss per position bucket, passkey accuracy per length; the passkey
    by length and depth as heat maps, the loss per position as lines."""
    ends = {arm: [last_probes(r) for r in st.runs(arm, knobs)] for arm, knobs in arms}
    keys = sorted({k for runs in ends.values() for p in runs for k in p},
                  key=lambda k: (k.split("@")[0], int(k.split("@")[1].split("-")[0])
                                 if "@" in k else 0))
    if not keys:
        return []
    # the model as it came (probes before step 1): the same model and rows for every arm
    before = [r.before for arm, knobs in arms for r in st.runs(arm, knobs) if r.before]
    start = {k[len("probe/"):]: _mean([b.get(k, math.nan) for b in before])
             for k in (before[0] if before else {}) if "/depth" not in k and "chat" not in k}
    retained = "short" in keys and "short" in start
    lines = ["### Probes at the last step", "",
             "Mean ± 95% half-width over seeds. `short`: held-out loss at the short length; "
             "`position_loss@a-b`: held-out loss at positions a..b; `passkey@L`: share of "
             "held-out passkey prompts of L tokens answered exactly (greedy)."
             + (" *short vs before*: the arm's `short` minus the model's before training "
                "(> 0: short-context loss lost)." if retained else ""), "",
             "| arm | " + " | ".join(keys) + (" | short vs before |" if retained else " |"),
             "|---|" + "---|" * (len(keys) + retained)]
    for arm, runs in ends.items():
        cells = [pm([p.get(k, float("nan")) for p in runs], ".2f") for k in keys]
        if retained:
            cells.append(pm([p.get("short", math.nan) - start["short"] for p in runs], ".3f"))
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if start:
        lines += [f"| *before training* ({len(before)} runs logged it) | " + " | ".join(
            f"{start[k]:.2f}" if k in start else "-" for k in keys)
            + (" | - |" if retained else " |")]
    lines.append("")
    heat, position = {}, {}
    for arm, knobs in arms:
        every = [last_probes(r, every_key=True) for r in st.runs(arm, knobs)]
        cells = {k for p in every for k in p if k.startswith("passkey@") and "/depth" in k}
        heat[arm] = {(int(k.split("@")[1].split("/")[0]), float(k.split("/depth")[1])):
                     _mean([p.get(k, math.nan) for p in every]) for k in cells}
        buckets = {k for p in every for k in p if k.startswith("position_loss@")}
        position[arm] = {int(k.split("@")[1].split("-")[1]):
                         _mean([p.get(k, math.nan) for p in every]) for k in buckets}
    for values, draw, fig, title in (
            (heat, plots.passkey_heatmaps, "passkey", "passkey accuracy at the last step (mean "
                                                       "over seeds)"),
            (position, plots.position_loss, "position_loss", "held-out loss by position at the "
                                                             "last step")):
        if any(values.values()):
            fig = f"results_{st.s.name}_{fig}.png"
            draw({a: v for a, v in values.items() if v}, out / fig, f"{st.s.name}: {title}")
            figures.append(fig)
            lines += [f"![{fig}]({fig})", ""]
    return lines


def control_section(st: Setting, control: str = "random_admit") -> list[str]:
    """Each difficulty score against the control that admits the same shares at random, and
    against length alone (the staircase): best eval loss, difference with a Welch interval."""
    from scipy import stats

    ctrl = [best(r.evals) for r in st.runs(control)]
    scored = [a for a in ("rarity", "compression", "loss") if st.runs(a)]
    if len(ctrl) < 2 or not scored:
        return []
    lines = ["### Difficulty: does density beat its random control?", "",
             f"Each score admits the same shares (a third, two thirds, all) as `{control}`, on "
             "the same seeds. Difference in best eval loss (score - comparison; < 0: the score "
             "is better) with a 95% Welch interval.", "",
             f"| score | best eval loss | vs {control} | verdict | vs the staircase (length) |",
             "|---|---|---|---|---|"]

    def diff(a: list[float], b: list[float]) -> tuple[str, str]:
        if len(a) < 2 or len(b) < 2:
            return "n/a", "-"
        ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
        d = float(np.mean(a) - np.mean(b))
        verdict = "better" if ci.high < 0 else "worse" if ci.low > 0 else "noise"
        return f"{d:+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]", verdict

    length = [best(r.evals) for r in st.runs("staircase")]
    for a in scored:
        vals = [best(r.evals) for r in st.runs(a)]
        c, verdict = diff(vals, ctrl)
        lc, lverdict = diff(vals, length)
        lines.append(f"| {a} | {pm(vals)} | {c} | {verdict} | {lc} ({lverdict}) |")
    return lines + [f"| {control} | {pm(ctrl)} | - | - | {diff(ctrl, length)[0]} "
                    f"({diff(ctrl, length)[1]}) |", ""]


def stable_text(v: dict) -> str:
    """A sweep row's largest stable LR; one that diverged at the lowest multiple swept is only
    known to be below it (the tuned x1 was stable): `< x128`, not `x1`."""
    low = min(v["cells"])
    return f"< x{low:g}" if v["stable"] < low else f"x{v['stable']:g}"


def twice_as_stable(base: dict, arm: dict) -> bool:
    """A largest stable LR at least twice the baseline's, the baseline's taken at its highest
    (the lowest multiple swept, where it diverged there): a 2x for certain."""
    return arm["stable"] >= 2 * max(base["stable"], min(base["cells"]))


def half_the_spikes(base_spikes: float, arm_spikes: float) -> bool:
    """At most half the baseline's spikes (fewer than half a spike a run counts as half one,
    so 0 against 0.7 is not a 2x)."""
    return base_spikes >= 2 * max(arm_spikes, 0.5)


def sweep_cells(runs: list[Run], tuned_lr: float, seq: int) -> dict[tuple[str, str], dict]:
    """(arm, condition: warmup and clipping) -> {"cells": {LR multiple of the tuned one: its
    runs' measures}, "stable": the largest multiple up to which no seed diverged (x1: the tuned
    runs)}."""
    out = {}
    conditions = sorted({(r.knobs.clip is not None, r.knobs.warmup, r.knobs.condition)
                         for r in runs})
    for arm in dict.fromkeys(r.arm for r in runs):
        for *_, cond in conditions:
            cells, stable = {}, 1.0
            for lr in sorted({r.knobs.lr_mult for r in runs}):
                rs = [r for r in runs
                      if (r.arm, r.knobs.condition, r.knobs.lr_mult) == (arm, cond, lr)]
                if not rs:
                    continue
                div = sum(diverged(r.records, r.evals) for r in rs)
                cells[lr / tuned_lr] = dict(
                    best=float(np.nanmean([best(r.evals) for r in rs])),
                    spikes=float(np.mean([spikes(r.records) for r in rs])),
                    cv=float(np.nanmean([grad_cv(r.records, seq) for r in rs])),
                    max_grad=float(np.nanmax([max_grad(r.records) for r in rs])),
                    diverged=div, n=len(rs))
                if all(not c["diverged"] for c in cells.values()):
                    stable = lr / tuned_lr
            if cells:
                out[(arm, cond)] = {"cells": cells, "stable": stable}
    return out


def sweep_section(st: Setting, out: Path, figures: list[str]) -> list[str]:
    runs = [r for r in st.res["sweep"] if r.ok or r.records]
    if not runs:
        return []
    table = sweep_cells(runs, st.equal.lr_mult, st.s.seq)
    mults = sorted({m for v in table.values() for m in v["cells"]})
    lines = ["### The unstable regime: learning rates above the tuned one", "",
             "Each cell: best eval loss (mean over its seeds), spikes (mean), gradient-norm CV "
             "(mean; the last 60% of the steps, full length only), largest gradient norm (max), "
             "runs diverged of runs (a non-finite loss, or an eval loss 0.5 "
             "nats above the best eval before it: a blow-up, even one the decaying schedule let "
             "recover by the end).", "",
             "| arm | condition | " + " | ".join(f"LR x{m:g}" for m in mults)
             + " | largest stable LR |", "|---|---|" + "---|" * (len(mults) + 1)]
    points = {}
    for (arm, cond), v in table.items():
        cells = [f"{fmt(c['best'])}; {c['spikes']:.1f} spikes; CV {fmt(c['cv'], '.2f')}; "
                 f"max {c['max_grad']:.1f}; "
                 f"{c['diverged']}/{c['n']} diverged" if c else "n/a"
                 for c in (v["cells"].get(m) for m in mults)]
        lines.append(f"| {arm} | {cond} | " + " | ".join(cells) + f" | {stable_text(v)} |")
        points[(arm, cond)] = {
            m: c["best"] if not c["diverged"] else math.nan for m, c in v["cells"].items()}
    fig = f"results_{st.s.name}_stability.png"
    plots.sweep(points, out / fig, f"{st.s.name}: stability sweep")
    figures.append(fig)
    return lines + ["", "Largest stable LR: the highest multiple of the tuned learning rate up "
                    f"to which no seed diverged (`< x{mults[0]:g}`: one did at the lowest "
                    "multiple swept; the tuned x1 was stable).", "",
                    f"![{fig}]({fig})", ""]


def ratio_section(st: Setting, out: Path, figures: list[str]) -> list[str]:
    """Issue 26: the sweep's arms by their length ratio (seq / first input_len): does a ratio
    exist at which staging raises the largest stable LR, or cuts spikes, 2x or more?"""
    runs = [r for r in st.res["sweep"] if r.ok or r.records]
    ratio = {r.arm: st.s.seq / max(1, first_length(r.curriculum)) for r in runs}
    if len({round(v) for a, v in ratio.items() if a != "baseline"}) < 2:
        return []  # one ratio swept (the staircase's 4x): the sweep section says it all
    table = sweep_cells(runs, st.equal.lr_mult, st.s.seq)
    lines = ["### Length ratio and stability", "",
             "Each arm's length ratio is sequence_len over its first input_len. At the "
             "learning rate where a baseline seed first diverged (else the sweep's top): spikes "
             "(mean over seeds), largest gradient norm (max), gradient-norm CV (full-length steps "
             "only), best eval loss (mean), runs diverged. *2x?*: a largest stable LR at least "
             "twice the baseline's, or at most half its spikes.", "",
             "| condition | arm | ratio | largest stable LR | spikes | max grad | CV | best eval "
             "loss | diverged | 2x? |", "|---|---|---|---|---|---|---|---|---|---|"]
    points: dict[tuple[str, str], dict[float, float]] = {}
    found = {}
    for cond in dict.fromkeys(c for _, c in table):
        base = table.get(("baseline", cond))
        if not base:
            continue
        fell = [m for m, x in base["cells"].items() if x["diverged"]]
        at = min(fell) if fell else max(base["cells"])
        for arm in sorted((a for a, c in table if c == cond), key=lambda a: (ratio[a], a)):
            v = table[(arm, cond)]
            c = v["cells"].get(at, {})
            wins = arm != "baseline" and (twice_as_stable(base, v) or half_the_spikes(
                base["cells"][at]["spikes"], c.get("spikes", math.nan)))
            found.setdefault(cond, []).extend([f"{arm} ({ratio[arm]:g}x)"] if wins else [])
            lines.append(f"| {cond} | {arm} | {ratio[arm]:g}x | {stable_text(v)} | "
                         f"{c.get('spikes', math.nan):.1f} | {c.get('max_grad', math.nan):.1f} | "
                         f"{fmt(c.get('cv'), '.2f')} | {fmt(c.get('best'))} | "
                         f"{c.get('diverged', '-')}/{c.get('n', '-')} | "
                         f"{'yes' if wins else '-'} |")
            family = ("baseline" if arm == "baseline" else arm.rsplit("_r", 1)[0]
                      if "_r" in arm else arm)
            points.setdefault((family, cond), {})[ratio[arm]] = (
                v["stable"] if v["stable"] >= min(v["cells"]) else math.nan)  # below: a gap
    for family in {f for f, _ in points} - {"baseline"}:  # the families start at ratio 1
        for cond in {c for _, c in points}:
            if ("baseline", cond) in points and (family, cond) in points:
                points[(family, cond)].setdefault(1.0, points[("baseline", cond)][1.0])
    lines += [""] + [f"- {cond}: " + (f"2x at {', '.join(arms)}" if arms else
                                       "no ratio raised the largest stable LR or cut spikes 2x")
                     + (f" (the baseline's largest stable LR {stable_text(table[('baseline', cond)])})")
                     for cond, arms in found.items()]
    fig = f"results_{st.s.name}_ratios.png"
    plots.ratios({k: v for k, v in points.items() if k[0] != "baseline"}, out / fig,
                 f"{st.s.name}: largest stable LR against the length ratio")
    figures.append(fig)
    return lines + ["", f"![{fig}]({fig})", ""]


def schedule_section(st: Setting) -> list[str]:
    runs = [r for r in st.res["schedules"] if r.ok]
    if not runs:
        return []
    lines = ["### The learning-rate schedule: cosine vs warmup-stable-decay", "",
             "WSD: constant after the warmup, a linear cool-down over the last 20% of the steps. "
             "Each schedule's ratio is against the baseline under the same schedule.", "",
             "| arm | cosine: best eval | WSD: best eval | FLOPs ratio, cosine "
             "| FLOPs ratio, WSD |",
             "|---|---|---|---|---|"]
    wsd = {a: [r for r in runs if r.arm == a] for a in dict.fromkeys(r.arm for r in runs)}
    cos = {a: st.runs(a) for a in wsd}
    t_cos = st.target(best)
    t_wsd = max((best(r.evals) for r in wsd.get("baseline", [])), default=math.nan)
    for arm in wsd:
        rc, rw = (ratio_cell(st.spend(rs["baseline"], t, "flops"), st.spend(rs[arm], t, "flops"))
                  for rs, t in ((cos, t_cos), (wsd, t_wsd)))
        lines.append(f"| {arm} | {pm([best(r.evals) for r in cos[arm]])} | "
                     f"{pm([best(r.evals) for r in wsd[arm]])} | {rc[0]} | {rw[0]} |")
    return lines + [""]


def same_solution(st: Setting, arms, out: Path, figures: list[str]) -> tuple[list[str], dict]:
    s = st.s
    if not s.data.get("test"):
        return [], {}
    ref = [r for r in st.runs("baseline") if r.seed == 0]
    if not ref:
        return [], {}

    def saved(r: Run) -> bool:
        return any((r.out / f).exists() for f in ("config.json", "adapter_config.json"))

    models = {"baseline|0": ref[0].out}  # the reference comes first
    for arm, knobs in arms:
        if knobs == st.equal:
            models.update({f"{arm}|{r.seed}": r.out for r in st.runs(arm, knobs) if saved(r)})
    post = compare(models, s.data["test"], s.data["format"], s.seq)
    by_arm: dict[str, list[dict]] = {}
    for key, value in post.items():
        by_arm.setdefault(key.split("|")[0], []).append({**value, "seed": int(key.split("|")[1])})
    yard = [v["kl"] for v in by_arm.get("baseline", []) if v["seed"] != 0]
    lines = ["### Same solution?", "",
             "Final models at the tuned baseline's settings on the held-out rows at full length: "
             "answer loss per length bucket (terciles of the rows' full length, prompt included) "
             "and per task (the long-range recall rows' answers, and the others'), each a mean "
             "over answer tokens as Axolotl's eval loss is; the long-range task's accuracy (every "
             "token of '<name> holds <colour>.' the argmax); and the mean KL per answer token "
             "from baseline seed 0. The yardstick is the KL from baseline seed 0 to the other "
             f"baseline seeds: {pm(yard, '.4f')}.", "",
             "| arm | short | mid | long | recall answers | other answers | recall accuracy "
             "| KL from baseline seed 0 | vs the seed-to-seed KL |",
             "|---|---|---|---|---|---|---|---|---|"]
    bucket_means = {}
    for arm, vals in by_arm.items():
        kls = [v["kl"] for v in vals if not (arm == "baseline" and v["seed"] == 0)]
        b = {k: [v["buckets"][k] for v in vals] for k in ("short", "mid", "long")}
        b.update({f"{t} answers": [v["tasks"][t] for v in vals] for t in ("recall", "other")})
        bucket_means[arm] = {k: float(np.nanmean(v)) for k, v in b.items()}
        m_kl = float(np.mean(kls)) if kls else math.nan
        y = float(np.mean(yard)) if yard else math.nan
        lines.append(f"| {arm} | {pm(b['short'])} | {pm(b['mid'])} | {pm(b['long'])} | "
                     f"{pm(b['recall answers'])} | {pm(b['other answers'])} | "
                     f"{pm([v['recall'] for v in vals], '.2f')} | {pm(kls, '.4f')} | "
                     f"{fmt(m_kl / y, '.1f') + 'x' if arm != 'baseline' and y > 0 else '-'} |")
    fig = f"results_{s.name}_buckets.png"
    plots.buckets(bucket_means, out / fig,
                  f"{s.name}: held-out answer loss per length bucket and per task")
    figures.append(fig)
    return lines + ["", f"![{fig}]({fig})", ""], {k: v for k, v in post.items()}


def targets_section(summaries: dict[str, dict], results: list[dict]) -> list[str]:
    lines = ["## The targets, met or not", ""]
    for name, summary in summaries.items():
        arms = {k: v for k, v in summary.items() if not k.startswith("_") and k != "baseline"}
        if not arms:
            continue
        # the best arm: the highest ratio among arms with an interval (>= 2 seeds reached);
        # one seed's ratio has no interval and cannot meet the target
        top = max(arms, key=lambda a: (math.isfinite(arms[a]["flops_ratio"][1]),
                                       arms[a]["flops_ratio"][0]
                                       if math.isfinite(arms[a]["flops_ratio"][0]) else -1))
        r, lo, hi = arms[top]["flops_ratio"]
        pr, plo, phi = arms[top]["paired"]
        met = math.isfinite(lo) and r >= 1.5 and lo > 1
        met_paired = math.isfinite(plo) and pr >= 1.5 and plo > 1
        if not math.isfinite(r):  # no arm reached it on any seed: the closest by best loss
            top = min(arms, key=lambda a: arms[a]["best"][0]
                      if math.isfinite(arms[a]["best"][0]) else math.inf)
            lines.append(f"- {name}: reach the tuned baseline's best eval loss with >= 1.5x "
                         "fewer FLOPs: no arm reached that loss on any seed: **not met** "
                         f"(closest: {top}).")
        else:
            lines.append(f"- {name}: reach the tuned baseline's best eval loss with >= 1.5x fewer "
                         f"FLOPs, interval above 1: best arm {top} at {fmt(r, '.2f')}x "
                         f"[{fmt(lo, '.2f')}, {fmt(hi, '.2f')}] "
                         f"({arms[top]['reached']}/{arms[top]['n']} seeds reached): "
                         + ("**met**" if met else "**not met**")
                         + f"; paired by seed {fmt(pr, '.2f')}x [{fmt(plo, '.2f')}, "
                         f"{fmt(phi, '.2f')}]: " + ("**met**." if met_paired else "**not met**."))
        base_best, arm_best = summary.get("baseline", {}).get("best"), arms[top]["best"]
        if not (met and met_paired) and base_best and math.isfinite(base_best[1]):
            gain = base_best[0] - arm_best[0]
            spread = max(base_best[1], arm_best[1] if math.isfinite(arm_best[1]) else 0.0)
            lines.append(f"  Why: {top}'s mean best eval loss is {fmt(abs(gain))} "
                         f"{'below' if gain > 0 else 'above'} the baseline's; "
                         f"the baseline's own 95% interval over seeds is ±{fmt(base_best[1])}, "
                         f"{top}'s ±{fmt(arm_best[1])}"
                         + (": the gain, if any, is no larger than the seed-to-seed spread of the "
                            "data order." if gain <= spread else
                            ": the loss gain stands out, but the compute ratio's interval is too "
                            "wide or below 1.5x.")
                         + " More seeds (the paired ratio narrows fastest), longer runs or a "
                         "larger model would tell.")
    for res in results:
        table = sweep_cells([r for r in res["sweep"] if r.ok or r.records], res["equal"].lr_mult,
                            res["setting"].seq)
        same = missed = conditions = 0
        # where the staircase's blow-ups began: at a short level, or at full length
        ups = [(r, blow_up(r.evals)) for r in res["sweep"] if r.arm == "staircase" and r.records]
        ups = [{x["step"]: x["input_len"] for x in r.records}.get(step, res["setting"].seq)
               for r, step in ups if step is not None]
        short = sum(length < res["setting"].seq for length in ups)
        for cond in dict.fromkeys(k[1] for k in table):
            b, c = table.get(("baseline", cond)), table.get(("staircase", cond))
            if not (b and c):
                continue
            # the regime: the lowest multiple at which a baseline seed diverged, else the top one
            fell = [m for m, x in b["cells"].items() if x["diverged"]]
            at = min(fell) if fell else max(b["cells"])
            bs = b["cells"][at]["spikes"]
            cs = c["cells"].get(at, {}).get("spikes", math.nan)
            fewer = half_the_spikes(bs, cs)
            higher = twice_as_stable(b, c)
            conditions += 1
            missed += not (fewer or higher)
            same += c["stable"] == b["stable"]
            lines.append(
                f"- {res['setting'].name}, {cond}: "
                f"largest stable LR baseline {stable_text(b)}, staircase {stable_text(c)} "
                f"({'**met**, >= 2x higher' if higher else '**not met**, not 2x higher'}); at LR "
                f"x{at:g} ("
                + ("where a baseline seed first diverged" if fell
                   else "the top of the sweep: no baseline seed diverged") + ") "
                f"spikes: baseline {bs:.1f}, staircase {cs:.1f} "
                f"({'**met**, >= 2x fewer' if fewer else '**not met**, not 2x fewer'}).")
        if missed:
            lines.append(
                f"  Why: in {same} of {conditions} conditions the staircase blew up "
                f"at the same learning rate as the baseline, and {short} of its {len(ups)} "
                "blow-ups began at a short level (input_len below sequence_len): here the "
                "blow-ups come with the update size, and short early inputs do not prevent them. "
                "A setting whose baseline is unstable because of long inputs (longer sequences, "
                "larger models: `--size gpu`, the scale of the published gains) would test it.")
    return lines + [""]


def limits(results: list[dict]) -> list[str]:
    """What the models' size allows the report to say, for the settings it holds."""
    names = {res["setting"].name for res in results}
    out = []
    if names - {"real", "extend"}:
        out.append("- The models built here are small (the finetune llama has ~1.7M weights) and "
                   "train for minutes on a CPU. Recall accuracy is ~0 for every arm: at this size "
                   "no model learns the long-range task, so it cannot tell the arms apart "
                   "(`--size gpu` trains long enough).")
    if "extend" in names:
        out.append("- The extension model is tiny (2 layers x 64, ~0.2M weights) and extends "
                   "for 60 steps: a test of the staged recipes' mechanics at 16x, where "
                   "attention is most of the compute, not of a production model. Its passkey "
                   "cells hold 4 prompts each (2 per depth), so they move in quarters.")
    if "real" in names:
        out.append("- The real model (135M weights) is a short LoRA fine-tune at sequence_len "
                   "256 on docstring chats it reads well already: a test of the plugin on a real "
                   "model and its chat template, not of long context, where staged lengths are "
                   "meant to pay.")
    return out


def write_report(results: list[dict], out: Path, *, command: str, started: float, runner,
                 preset: str, cores: int | None, left_out: tuple = ()) -> None:
    """docs/results.md and its figures; `started`: the invocation's time.perf_counter()."""
    out.mkdir(parents=True, exist_ok=True)
    runs = {r.out: r for r in runner.done}.values()  # a run asked for twice counts once
    trained = sum(not r.cached for r in runs)
    lines = ["# Results: staged input lengths against a tuned baseline", "",
             f"Written by `{command}` on {time.strftime('%Y-%m-%d')}: preset `{preset}`, "
             f"{len(runs)} runs through `axolotl train` ({trained} trained in this invocation, "
             f"{len(runs) - trained} read from the run cache; their own times sum to "
             f"{sum(r.seconds for r in runs) / 3600:.1f} h, two at a time), "
             "ELAPSED min for this invocation (training and this report) on "
             f"{cores} CPU cores. Wall times are of runs sharing the machine two at a time: "
             "compare them only within this report.", "",
             "How to read it: every number is a mean over seeds with its 95% interval (n = seeds);"
             " a difference whose interval includes no change is noise. Compute is FLOPs counted "
             "from what each run fed the model (tokens and squared example lengths, measured "
             "from the batches), not from the schedule.", ""]
    if left_out:
        lines += [f"Not in this report: the preset's {', '.join(left_out)} setting(s) "
                  f"(`--settings {' '.join(left_out)}` runs them).", ""]
    figures: list[str] = []
    summaries = {}
    body = []
    for res in results:
        section, summary = setting_section(Setting(res), out, figures)
        body += section
        summaries[res["setting"].name] = summary
    lines += targets_section(summaries, results) + body + [
        "## Reading it honestly", "",
        "- The tuning grid is one seed per cell, the unstable-regime sweep the seeds its cells "
        "show (k/n diverged): a cell's lead smaller than the seed spread of the main table is "
        "noise.",
        *limits(results),
        "- Axolotl's eval loss is a mean over answer tokens (per batch of 16, then over "
        "batches); *Same solution?* pools answer tokens per bucket and per task. The recall "
        "rows' answers are short and far easier than the instructions', so an arm can win on "
        "recall answers and lose on the rest: read the task columns before the overall loss.",
        "- The target is the tuned baseline's best eval loss over its seeds; an arm reaching it "
        "on fewer seeds than it ran has its ratio over those seeds only (say so before quoting "
        "it).",
        "- Wall times include Axolotl's start-up (~30-40 s a run) and two runs sharing two cores.",
        ""]
    lines[2] = lines[2].replace("ELAPSED", f"{(time.perf_counter() - started) / 60:.1f}")
    (out / "results.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(
        {name: {k: v for k, v in s.items() if k != "_post"} | {"post": s.get("_post")}
         for name, s in summaries.items()}, indent=1, default=float))
    print("\n".join(lines))
