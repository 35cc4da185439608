"""`axolotl-curriculum report OUTPUT_DIR`: what a run fed, per step and per level (docs/report.md).

Reading and aggregation only; the figures are drawn in `report_plots.py`. Inputs, all in the
run's output dir: `curriculum_log.jsonl` (one line per optimizer step and rank, any order; a cut
last line is skipped), `curriculum_summary.json` and `curriculum_plan.json` where present, and
HF's `trainer_state.json` (there or in the newest `checkpoint-*/`) for eval loss.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

LOG = "curriculum_log.jsonl"
SENSE_DEFAULTS = {"max_grad_cv": 0.3, "max_spikes": 0, "max_loss_slope": 0.001}
STATS = ("grad_cv", "spikes", "loss_slope")
# rank 0's planned counts per step (`global_<key>`, plan.STEP_COUNTS), summed per level;
# waiting is a gauge: its value at the level's last step
COUNTS = ("examples", "tokens", "tokens_cut", "cut", "prompt_cut", "skipped_no_label",
          "skipped_too_long", "deferred")


class ReportError(Exception):
    """Input the report cannot be made from; the message is one line naming what is missing."""


@dataclass
class Step:
    """One optimizer step: every rank's line; its level is rank 0's (or the lowest rank's)."""

    step: int
    lines: dict[int, dict]  # rank -> its line

    @property
    def head(self) -> dict:
        return self.lines[min(self.lines)]

    @property
    def level(self) -> int:
        return self.head["level"]

    @property
    def tokens(self) -> int:
        return sum(line.get("tokens") or 0 for line in self.lines.values())

    @property
    def max_example_len(self) -> int:
        return max(line.get("max_example_len") or 0 for line in self.lines.values())

    @property
    def loss(self) -> float | None:
        losses = [line["loss"] for line in self.lines.values() if line.get("loss") is not None]
        return sum(losses) / len(losses) if losses else None

    @property
    def grad_norm(self) -> float | None:
        return next((line["grad_norm"] for line in self.lines.values()
                     if line.get("grad_norm") is not None), None)

    def planned(self, key: str):
        """A rank-0 `global_*` count, None where rank 0's line is missing or lacks it."""
        return self.lines.get(0, {}).get(f"global_{key}")


@dataclass
class Run:
    output_dir: Path
    steps: list[Step]
    ranks: list[int]
    summary: dict | None = None
    plan: dict | None = None
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # said quietly in report.md
    problems: list[str] = field(default_factory=list)  # said LOUD in report.md

    @property
    def curriculum(self) -> dict:
        return (self.summary or {}).get("curriculum") or {}

    def level_input_lens(self) -> dict[int, int]:
        lens = {k: lv.get("input_len") for k, lv in enumerate(self.curriculum.get("levels") or [])}
        for lv in (self.plan or {}).get("levels") or []:
            lens.setdefault(lv.get("level"), lv.get("input_len"))
        for s in self.steps:
            lens.setdefault(s.level, s.head.get("input_len"))
        return dict(sorted(lens.items()))

    def decisions(self) -> list[dict]:
        return [{**s.head, "step": s.step} for s in self.steps if s.head.get("decision")]

    def thresholds(self) -> dict:
        sense = self.curriculum.get("sense_grad")
        sense = sense if isinstance(sense, dict) else {}
        return {k: sense.get(k, v) for k, v in SENSE_DEFAULTS.items()}


def _read_json(path: Path, notes: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{path.name} could not be read ({e}); left out")
        return None


def read_lines(path: Path, notes: list[str]) -> dict[tuple[int, int], dict]:
    """(step, rank) -> line; a later line for the same step and rank replaces an earlier one."""
    lines: dict[tuple[int, int], dict] = {}
    text = path.read_text(errors="replace").splitlines()
    replaced = 0
    for number, raw in enumerate(text, 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw, parse_constant=lambda _: None)  # NaN/Infinity -> null
            key = (int(line["step"]), int(line["rank"]))
            int(line["level"])
        except (ValueError, KeyError, TypeError) as e:
            why = ("cut short (the run was killed mid-write)" if number == len(text)
                   else f"not a log line ({e})")
            notes.append(f"{path.name} line {number} skipped: {why}")
            continue
        replaced += key in lines
        lines[key] = line
    if replaced:
        notes.append(f"{replaced} lines were written again for a step and rank already logged "
                     "(a resumed run); the later ones are used")
    return lines


def _ranges(steps: list[int], most: int = 12) -> str:
    runs: list[list[int]] = []
    for s in sorted(steps):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:most])
    return text + (f", ... ({len(steps)} steps)" if len(runs) > most else "")


def check_ranks(run: Run) -> None:
    """Problems: ranks disagree on a step's level or micro-batch count, or a rank lacks steps."""
    for key, what in (("level", "the level"), ("micro_batches", "micro_batches")):
        bad = [s.step for s in run.steps if len({line.get(key) for line in s.lines.values()}) > 1]
        if bad:
            run.problems.append(f"ranks disagree on {what} at steps {_ranges(bad)}")
    if not run.steps:
        return
    every = range(1, run.steps[-1].step + 1)
    present = {s.step: s.lines for s in run.steps}
    for rank in run.ranks:
        missing = [n for n in every if rank not in present.get(n, {})]
        last = max(n for n in present if rank in present[n])
        tail = [n for n in missing if n > last]
        if tail and run.summary is None:  # killed: ranks stop a few steps apart
            run.notes.append(f"rank {rank}'s log ends at step {last} (the run did not finish)")
            missing = [n for n in missing if n <= last]
        if missing:
            run.problems.append(f"rank {rank} is missing steps {_ranges(missing)}")


def trainer_state(output_dir: Path, notes: list[str]) -> dict | None:
    path = output_dir / "trainer_state.json"
    if not path.is_file():
        checkpoints = [p for p in output_dir.glob("checkpoint-*/trainer_state.json")
                       if p.parent.name.split("-")[-1].isdigit()]
        if not checkpoints:
            return None
        path = max(checkpoints, key=lambda p: int(p.parent.name.split("-")[-1]))
    return _read_json(path, notes)


def load(output_dir: str | Path) -> Run:
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise ReportError(f"output dir {output_dir} does not exist")
    if not (output_dir / LOG).is_file():
        raise ReportError(f"{output_dir} has no {LOG} "
                          "(not a curriculum run, or no step logged yet)")
    notes: list[str] = []
    lines = read_lines(output_dir / LOG, notes)
    if not lines:
        raise ReportError(f"{output_dir / LOG} has no complete log line")
    by_step: dict[int, dict[int, dict]] = {}
    for (step, rank), line in lines.items():
        by_step.setdefault(step, {})[rank] = line
    steps = [Step(n, dict(sorted(by_step[n].items()))) for n in sorted(by_step)]
    run = Run(output_dir, steps, sorted({rank for _, rank in lines}), notes=notes)
    run.summary = _read_json(output_dir / "curriculum_summary.json", notes)
    run.plan = _read_json(output_dir / "curriculum_plan.json", notes)
    state = trainer_state(output_dir, notes) or {}
    run.eval_loss = [(e["step"], e["eval_loss"]) for e in state.get("log_history") or []
                     if e.get("eval_loss") is not None and e.get("step") is not None]
    check_ranks(run)
    check_summary(run)
    return run


def segments(run: Run) -> list[tuple[int, int, int]]:
    """Consecutive steps at one level: (level, first step, last step), in step order."""
    out: list[list[int]] = []
    for s in run.steps:
        if out and out[-1][0] == s.level:
            out[-1][2] = s.step
        else:
            out.append([s.level, s.step, s.step])
    return [tuple(seg) for seg in out]


def fed_per_level(run: Run) -> dict[int, dict]:
    """Per level, from the log: steps, the planned counts summed, tokens measured on every rank."""
    rows: dict[int, dict] = {}
    for s in run.steps:
        row = rows.setdefault(s.level, {"steps": 0, "measured_tokens": 0, "waiting": None,
                                        **{k: None for k in COUNTS}})
        row["steps"] += 1
        row["measured_tokens"] += s.tokens
        for key in COUNTS:
            if s.planned(key) is not None:
                row[key] = (row[key] or 0) + s.planned(key)
        if s.planned("waiting") is not None:
            row["waiting"] = s.planned("waiting")
    return rows


def check_summary(run: Run) -> None:
    """Note where the summary's per-level steps or `global_*` counts differ from the log's sums."""
    fed = fed_per_level(run)
    for lv in (run.summary or {}).get("levels") or []:
        logged = fed.get(lv.get("level"), {})
        keys = [("steps", "steps")] + [(f"global_{k}", k) for k in (*COUNTS, "waiting")]
        differ = [f"{key} {lv[key]} (log: {logged.get(word)})" for key, word in keys
                  if lv.get(key) is not None and lv[key] != (logged.get(word) or 0)]
        if differ:
            run.notes.append(f"curriculum_summary.json, level {lv.get('level')}: "
                             + ", ".join(differ))


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
                     f.get("deferred"), f.get("waiting")])
    out += _table(header, rows)
    plan = {lv.get("level"): lv for lv in (run.plan or {}).get("levels") or []}
    if not plan:
        return out + ["", "No curriculum_plan.json: nothing to compare with."]
    out += ["", "## Per level: fed against the plan", ""]
    keys = ("steps", "examples", "tokens", "tokens_cut", "cut", "prompt_cut", "skipped_no_label",
            "skipped_too_long", "deferred", "waiting")
    header = ["level"] + [h for key in keys for h in (key.replace("_", " "), "plan")]
    rows = [[k] + [v for key in keys for v in (fed.get(k, {}).get(key), plan.get(k, {}).get(key))]
            for k in lens]
    return out + _table(header, rows)


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
    for action in ("hold", "pending"):
        some = [d for d in decisions if d["decision"] == action]
        if some:
            out.append(f"\n{len(some)} `{action}` checks; the last, at step {some[-1]['step']}: "
                       f"{some[-1].get('reason')}")
    return out


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
        out.append("- no curriculum_summary.json: the run was killed or has not finished")
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
    out += [""] + level_tables(run) + [""] + decision_lines(run)
    out += ["", "## Figures", ""]
    out += [f"### {title}\n\n![{title}]({name})\n" for title, name in figures]
    return "\n".join(out).rstrip() + "\n"


def run(output_dir: str | Path, out_dir: str | Path | None = None) -> int:
    """Write report.md and the figures; 0 on success, 2 (and one line on stderr) on bad input."""
    try:
        loaded = load(output_dir)
        out = Path(out_dir) if out_dir is not None else Path(output_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ReportError(f"cannot write to {out}: {e}") from None
        from .report_plots import draw  # matplotlib only when drawing

        figures = draw(loaded, out)
        (out / "report.md").write_text(render(loaded, figures))
    except ReportError as e:
        print(f"axolotl-curriculum report: {e}", file=sys.stderr)
        return 2
    for note in loaded.notes:
        print(f"axolotl-curriculum report: note: {note}", file=sys.stderr)
    for problem in loaded.problems:
        print(f"axolotl-curriculum report: WARNING: {problem}", file=sys.stderr)
    print(f"axolotl-curriculum report: wrote {out / 'report.md'} and {len(figures)} figures")
    return 0
