"""`axolotl-curriculum report OUTPUT_DIR`: what a run fed, per step and per level (docs/report.md).

Aggregation and report.md only: the run's files are read in `run_files.py`, the figures drawn
in `report_plots.py`. A run the report cannot be made from (no output dir, no log, no complete
log line, an output folder it cannot write) is a `CurriculumError`: one line, exit status 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import CurriculumError
from ..core.names import PLAN_FILE, SUMMARY_FILE, WAITING
from .run_files import REPORTED_COUNTS, Run, fed_per_level, load, segments
from .status import exit_status


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return " ".join(str(value).split()).replace("|", "\\|")  # one table cell


def _table(header: list[str], rows: list[list]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def level_tables(run: Run) -> list[str]:
    fed, lens = fed_per_level(run), run.level_input_lens()
    truncation = {s.level: s.head.get("truncation") for s in run.steps}
    out = ["## Per level: what was fed", "",
           "Counts are the planned ones logged by rank 0 each step, summed over the level's steps; "
           "`tokens measured` is the non-padding tokens every rank was fed; `waiting` is the rows "
           "waiting at the level's last step.", ""]
    header = ["level", "input_len", "truncation", "steps", "examples", "tokens measured",
              "tokens planned", "tokens cut", "cut", "prompt cut", "skipped no label",
              "skipped too long", "deferred", "waiting"]
    rows = []
    for k, input_len in lens.items():
        f = fed.get(k, {})
        rows.append([k, input_len, truncation.get(k), f.get("steps", 0), f.get("examples"),
                     f.get("measured_tokens", 0), f.get("tokens"), f.get("tokens_cut"),
                     f.get("cut"), f.get("prompt_cut"), f.get("skipped_no_label"), f.get("skipped_too_long"),
                     f.get("deferred"), f.get(WAITING)])
    out += _table(header, rows)
    plan = {lv.get("level"): lv for lv in (run.plan or {}).get("levels") or []}
    if not plan:
        return out + ["", f"No {PLAN_FILE}: nothing to compare with."]
    out += ["", "## Per level: fed against the plan", ""]
    keys = ("steps", *REPORTED_COUNTS, WAITING)
    pairs = {key: [(fed.get(k, {}).get(key), plan.get(k, {}).get(key)) for k in lens]
             for key in keys}
    zero = [key for key in keys if all(not f and not p for f, p in pairs[key])]
    shown = [key for key in keys if key not in zero]
    differ = sum(f != p for key in shown for f, p in pairs[key])
    out += ["What the run fed, each count beside the plan's where they differ ('80 (plan 84)'); "
            + (f"{differ} counts differ from the plan." if differ else "every count as planned."), ""]
    rows = [[k] + [_cell(f) if f == p else f"{_cell(f)} (plan {_cell(p)})"
                   for f, p in (pairs[key][i] for key in shown)] for i, k in enumerate(lens)]
    out += _table(["level"] + [key.replace("_", " ") for key in shown], rows)
    if zero:
        out += ["", "Zero at every level, fed and planned: "
                + ", ".join(key.replace("_", " ") for key in zero) + "."]
    return out


def decision_lines(run: Run) -> list[str]:
    decisions = run.decisions()
    if not decisions:
        return []
    out = ["## sense_grad decisions", "",
           "thresholds: " + ", ".join(f"{k} {v}" for k, v in run.thresholds().items()), ""]
    listed = [d for d in decisions if d["decision"] not in ("hold", "pending")]
    out += _table(["step", "level", "decision", "grad_cv", "spikes", "loss_slope", "reason"],
                  [[d["step"], d["level"], d["decision"], d.get("grad_cv"), d.get("spikes"),
                    d.get("loss_slope"), d.get("reason")] for d in listed])
    return out + _counted(decisions, ("hold", "pending"))


def _counted(decisions: list[dict], actions) -> list[str]:
    """A line per action: how many checks took it, and the last one's reason."""
    out = []
    for action in actions:
        some = [d for d in decisions if d["decision"] == action]
        if some:
            out.append(f"\n{len(some)} `{action}` checks; the last, at step {some[-1]['step']}: "
                       f"{some[-1].get('reason')}")
    return out


def probe_lines(run: Run) -> list[str]:
    ends, lens = run.level_ends(), run.level_input_lens()
    if not ends:
        return []
    lengths = sorted({n for p in ends.values() for n in p.passkey})
    out = ["", "## Probes at each level's end", "",
           "The held-out probes (`curriculum.probes`) at each level's last probed step, rank 0's "
           "line: the model as the level left it. `short`: loss on held-out rows cut to the first "
           "level's length (retention); `passkey@L`: exact-match accuracy at prompt length L, the "
           "mean over depths (a level probes up to the next level's length; `-`: not measured).",
           ""]
    out += _table(["level", "input_len", "step", "short", *(f"passkey@{n}" for n in lengths)],
                  [[k, lens.get(k), p.step, p.short, *(p.passkey.get(n) for n in lengths)]
                   for k, p in ends.items()])
    buckets = sorted({b for p in ends.values() for b in p.position_loss})
    if buckets:
        out += ["", "### Position loss at each level's end", "",
                "Loss on held-out long rows (cut to the level's input_len) at positions "
                "[lo, hi).", ""]
        out += _table(["level", "step", *(f"{lo}-{hi}" for lo, hi in buckets)],
                      [[k, p.step, *(p.position_loss.get(b) for b in buckets)]
                       for k, p in ends.items()])
    return out + eval_decision_lines(run)


def eval_decision_lines(run: Run) -> list[str]:
    decisions = run.eval_decisions()
    if not decisions:
        return []
    listed = [d for d in decisions if d["decision"] in ("advance", "backoff")]
    out = ["", "### sense_eval decisions", "",
           "The gate's checks that took sense_eval's verdict: the short probe against its value "
           "before the level began, the passkey at the level's length.", ""]
    out += (_table(["step", "level", "decision", "short before", "passkey length", "reason"],
                   [[d["step"], d["level"], d["decision"], d.get("short_before"),
                     d.get("passkey_length"), d.get("reason")] for d in listed])
            if listed else ["No check advanced a level."])
    return out + _counted(decisions, ("hold", "pending", "last_level"))


def render(run: Run, figures: list[tuple[str, str]]) -> str:
    cur, lens = run.curriculum, run.level_input_lens()
    first, last = run.steps[0].step, run.steps[-1].step
    out = [f"# Curriculum report: {run.output_dir}", ""]
    out += [f"**WARNING: {p}**\n" for p in run.problems]
    out += [f"- steps: {len(run.steps)} ({first} to {last})",
            f"- ranks: {len(run.ranks)} ({', '.join(map(str, run.ranks))})",
            f"- levels: {len(lens)}, input_len " + ", ".join(_cell(v) for v in lens.values()),
            f"- tokens measured: {sum(s.tokens for s in run.steps)}"]
    if run.summary is None:
        out.append(f"- no {SUMMARY_FILE}: the run was killed or has not finished")
    else:
        budget = cur.get("budget") or (run.plan or {}).get("settings", {}).get("budget")
        out.append(f"- truncation {cur.get('truncation')}, budget {budget or 'default'}, sense_grad "
                   f"{'on' if cur.get('sense_grad') else 'off'}, never fits: "
                   f"{run.summary.get('never_fits')}")
    out += ["- steps by level: " + ", ".join(f"level {k} {a}-{b}" for k, a, b in segments(run))]
    out += [f"- re-scored (rescore) at step {r['step']} for level {r['rescore_level']}, fed from step "
            f"{r['rescore_from_step']}: {r['rescore_changed']} examples admitted instead of others "
            f"({r['rescore_seconds']} s); the plan projects the scores taken before step 1"
            for r in (s.head for s in run.steps) if "rescore_level" in r]
    out += [f"- note: {n}" for n in run.notes]
    out += [""] + level_tables(run) + [""] + decision_lines(run) + probe_lines(run)
    out += ["", "## Figures", ""]
    out += [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    return "\n".join(out).rstrip() + "\n"


def make_report(output_dir: str | Path, out_dir: str | Path | None = None) -> int:
    """Write report.md and the figures into `out_dir` (default: `output_dir`); say the run's
    notes and problems on stderr. Raises `CurriculumError` for a run it cannot report on."""
    loaded = load(output_dir)
    out = Path(out_dir) if out_dir is not None else Path(output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CurriculumError(f"cannot write to {out}: {e}") from None
    from .report_plots import draw  # matplotlib only when drawing

    figures = draw(loaded, out)
    (out / "report.md").write_text(render(loaded, figures))
    for note in loaded.notes:
        print(f"axolotl-curriculum report: note: {note}", file=sys.stderr)
    for problem in loaded.problems:
        print(f"axolotl-curriculum report: WARNING: {problem}", file=sys.stderr)
    print(f"axolotl-curriculum report: wrote {out / 'report.md'} and {len(figures)} figures")
    return 0


def run(output_dir: str | Path, out_dir: str | Path | None = None) -> int:
    """Write report.md and the figures; 0 on success, 2 (and one line on stderr) on bad input."""
    return exit_status("report", make_report, output_dir, out_dir)
