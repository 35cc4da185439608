"""What a run wrote, read back: its steps, every rank's log lines, its summary and plan.

The data model `report` aggregates (report.py) and draws (report_plots.py) from. Inputs, all in
the run's output dir: `curriculum_log.jsonl` (one line per optimizer step and rank, any order; a
cut last line is skipped), `curriculum_summary.json` and `curriculum_plan.json` where present,
and `curriculum_evals.jsonl` for eval loss (else HF's `trainer_state.json`, there or in the
newest `checkpoint-*/`). Probes (`probe/*` keys, run/probes.py) are read from the lines of the
steps they ran after.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import SenseGrad
from ..core.errors import CurriculumError
from ..core.names import (EVAL_FILE, LOG_FILE, PLAN_FILE, STEP_COUNTS, SUMMARY_FILE, WAITING,
                          PROBE, SHORT, read_jsonl)

STATS = ("grad_cv", "spikes", "loss_slope")  # sense_grad's statistics, each with a `max_<stat>`
SENSE_DEFAULTS = {f"max_{stat}": SenseGrad.model_fields[f"max_{stat}"].default for stat in STATS}
# The step counts the report sums per level, checks against the summary and shows (rank 0's
# `global_<key>`): all but positions, chunks and short_*, which its tables leave out. waiting is a gauge
# beside them: its value at the level's last step.
REPORTED_COUNTS = tuple(key for key in STEP_COUNTS
                        if key not in ("positions", "chunks", "short_examples", "short_tokens"))
PASSKEY_KEY = re.compile(re.escape(PROBE) + r"passkey@(\d+)(?:/depth(\d+(?:\.\d*)?(?:e-?\d+)?))?")
POSITION_KEY = re.compile(re.escape(PROBE) + r"position_loss@(\d+)-(\d+)")
EVAL_STATS = ("short_before", "passkey_length")  # on a gate decision that sense_eval took part in


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
class Probed:
    """The probes measured after one step (its lowest rank's line; every rank logs the same)."""

    step: int
    level: int
    short: float | None = None
    passkey: dict[int, float] = field(default_factory=dict)  # prompt length -> mean over depths
    depths: dict[tuple[int, float], float] = field(default_factory=dict)  # (length, depth) ->
    position_loss: dict[tuple[int, int], float] = field(default_factory=dict)  # [lo, hi) -> loss


def probed(step: Step) -> Probed | None:
    """The step's probes parsed from their keys; None where none ran after it."""
    keys = {k: v for k, v in step.head.items() if k.startswith(PROBE) and v is not None}
    if not keys:
        return None
    out = Probed(step.step, step.level, keys.get(SHORT))
    for key, value in keys.items():
        if m := PASSKEY_KEY.fullmatch(key):
            if m[2] is None:
                out.passkey[int(m[1])] = value
            else:
                out.depths[int(m[1]), float(m[2])] = value
        elif m := POSITION_KEY.fullmatch(key):
            out.position_loss[int(m[1]), int(m[2])] = value
    return out


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

    def probes(self) -> list[Probed]:
        """Every probed step, in step order."""
        return [p for p in map(probed, self.steps) if p is not None]

    def level_ends(self) -> dict[int, Probed]:
        """Per level, its last probed step: the probes as the level left the model."""
        return dict(sorted({p.level: p for p in self.probes()}.items()))

    def eval_decisions(self) -> list[dict]:
        """The gate's decisions that sense_eval's verdict took part in."""
        return [d for d in self.decisions() if any(key in d for key in EVAL_STATS)]

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
    """Problems: ranks disagree on a step's level, micro-batch count or probes, or a rank lacks
    steps."""
    def probes(line: dict) -> str:
        return json.dumps({k: v for k, v in line.items() if k.startswith(PROBE)}, sort_keys=True)

    for read, what in ((lambda line: line.get("level"), "the level"),
                       (lambda line: line.get("micro_batches"), "micro_batches"),
                       (probes, "the probes")):
        bad = [s.step for s in run.steps if len({read(line) for line in s.lines.values()}) > 1]
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


def eval_points(output_dir: Path, notes: list[str]) -> list[tuple[int, float]]:
    """(step, eval loss) from the run's own evals file; a run without one (a hand-written loop,
    an older version) from the trainer's `trainer_state.json`, which only a saved checkpoint
    or the end of training writes."""
    if (output_dir / EVAL_FILE).is_file():
        lines = read_jsonl(output_dir / EVAL_FILE)
    else:
        lines = (trainer_state(output_dir, notes) or {}).get("log_history") or []
    return [(e["step"], e["eval_loss"]) for e in lines if e.get("step") is not None
            and isinstance(e.get("eval_loss"), (int, float)) and math.isfinite(e["eval_loss"])]


def load(output_dir: str | Path) -> Run:
    output_dir = Path(output_dir)
    if output_dir.is_file():  # `report config.yml`: point at the run's folder instead
        hint = "the run's output_dir"
        if output_dir.suffix in (".yml", ".yaml"):
            import yaml

            try:
                named = (yaml.safe_load(output_dir.read_text()) or {}).get("output_dir")
            except (yaml.YAMLError, AttributeError):
                named = None
            if named:
                hint = f"the run's output_dir: axolotl-curriculum report {named}"
        raise CurriculumError(f"{output_dir} is a file; report reads a run's folder ({hint})")
    if not output_dir.is_dir():
        raise CurriculumError(f"output dir {output_dir} does not exist")
    if not (output_dir / LOG_FILE).is_file():
        raise CurriculumError(f"{output_dir} has no {LOG_FILE} "
                              "(not a curriculum run, or no step logged yet)")
    notes: list[str] = []
    lines = read_lines(output_dir / LOG_FILE, notes)
    if not lines:
        raise CurriculumError(f"{output_dir / LOG_FILE} has no complete log line")
    by_step: dict[int, dict[int, dict]] = {}
    for (step, rank), line in lines.items():
        by_step.setdefault(step, {})[rank] = line
    steps = [Step(n, dict(sorted(by_step[n].items()))) for n in sorted(by_step)]
    run = Run(output_dir, steps, sorted({rank for _, rank in lines}), notes=notes)
    run.summary = _read_json(output_dir / SUMMARY_FILE, notes)
    run.plan = _read_json(output_dir / PLAN_FILE, notes)
    run.eval_loss = eval_points(output_dir, notes)
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
        row = rows.setdefault(s.level, {"steps": 0, "measured_tokens": 0, WAITING: None,
                                        **{k: None for k in REPORTED_COUNTS}})
        row["steps"] += 1
        row["measured_tokens"] += s.tokens
        for key in REPORTED_COUNTS:
            if s.planned(key) is not None:
                row[key] = (row[key] or 0) + s.planned(key)
        if s.planned(WAITING) is not None:
            row[WAITING] = s.planned(WAITING)
    return rows


def check_summary(run: Run) -> None:
    """Note where the summary's per-level steps or `global_*` counts differ from the log's sums."""
    fed = fed_per_level(run)
    for lv in (run.summary or {}).get("levels") or []:
        logged = fed.get(lv.get("level"), {})
        keys = [("steps", "steps")] + [(f"global_{k}", k) for k in (*REPORTED_COUNTS, WAITING)]
        differ = [f"{key} {lv[key]} (log: {logged.get(word)})" for key, word in keys
                  if lv.get(key) is not None and lv[key] != (logged.get(word) or 0)]
        if differ:
            run.notes.append(f"{SUMMARY_FILE}, level {lv.get('level')}: "
                             + ", ".join(differ))
