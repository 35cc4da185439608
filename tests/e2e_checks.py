"""Checks the end-to-end tests run on a finished `axolotl train`: the plan training wrote (and the
`plan` CLI) against what the log says was fed, and `report` against the log."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import matplotlib.image
import yaml

from axolotl_curriculum import report
from axolotl_curriculum.demo import axolotl_env
from axolotl_curriculum.plan import STEP_COUNTS

COMPARED = ("steps", *STEP_COUNTS, "waiting")


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "curriculum_log.jsonl").read_text().splitlines()]


def fed_per_level(recs: list[dict]) -> dict[int, dict]:
    """Per level, from the log: steps, rank 0's global_* counts summed, the waiting gauge at the
    level's last step, and the tokens measured on every rank."""
    out: dict[int, dict] = {}
    for r in sorted(recs, key=lambda r: (r["step"], r["rank"])):
        row = out.setdefault(r["level"], {"steps": 0, "measured": 0, **dict.fromkeys(STEP_COUNTS, 0)})
        row["measured"] += r["tokens"]
        if r["rank"] == 0:
            row["steps"] += 1
            for key in STEP_COUNTS:
                row[key] += r[f"global_{key}"]
            row["waiting"] = r["global_waiting"]
    return out


def assert_plan_matches_log(out: Path) -> dict:
    """curriculum_plan.json (written by training at its start) projects, per level, exactly
    what rank 0's log lines say was fed. Returns the plan."""
    plan = json.loads((out / "curriculum_plan.json").read_text())
    fed = fed_per_level(records(out))
    assert plan["total"]["exact"]
    for lv in plan["levels"]:
        got = fed.get(lv["level"], {"steps": 0, **dict.fromkeys(STEP_COUNTS, 0), "waiting": 0})
        assert {k: lv[k] for k in COMPARED} == {k: got[k] for k in COMPARED}, lv["level"]
    assert set(fed) <= {lv["level"] for lv in plan["levels"]}
    return plan


def plan_cli(config: Path, out: Path, *extra: str) -> dict:
    """`axolotl-curriculum plan CONFIG --out DIR`; its plan.json."""
    proc = subprocess.run(["axolotl-curriculum", "plan", str(config), "--out", str(out), *extra],
                          env=axolotl_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    plan["stdout"] = proc.stdout
    return plan


def assert_cli_plan_equals_training(run, tmp: Path, *extra: str) -> dict:
    """The `plan` CLI on the run's own config projects what training projected, level by level."""
    cli = plan_cli(run.config, tmp, *extra)
    trained = json.loads((run.out / "curriculum_plan.json").read_text())
    assert cli["curriculum"] == trained["curriculum"]
    assert cli["levels"] == trained["levels"]
    return cli


def logged_ladder(output: str) -> dict:
    """The YAML block training logged after `curriculum: levels: auto chose`."""
    after = output.split("levels: auto chose\n", 1)[1]
    block = []
    for line in after.splitlines():
        if line and not line.startswith((" ", "curriculum:")):
            break
        block.append(line)
    return yaml.safe_load("\n".join(block))["curriculum"]


def assert_report(out: Path, summary_agrees: bool = True) -> str:
    """`report` on a finished run: report.md's numbers are the log's, every figure is drawn and
    non-trivial, and the ranks agreed. Returns report.md."""
    assert report.run(out) == 0
    md = (out / "report.md").read_text()
    assert "WARNING" not in md, md[:2000]
    assert ("summary.json, level" not in md) == summary_agrees, md[:2000]
    recs = records(out)
    steps = sorted({r["step"] for r in recs})
    ranks = sorted({r["rank"] for r in recs})
    assert f"- steps: {len(steps)} ({steps[0]} to {steps[-1]})" in md
    assert f"- ranks: {len(ranks)} ({', '.join(map(str, ranks))})" in md
    assert f"- tokens measured: {sum(r['tokens'] for r in recs)}" in md
    header, *rows = _cells(md, "## Per level: what was fed")
    shown = {int(row[0]): dict(zip(header, row)) for row in rows}
    for level, want in fed_per_level(recs).items():
        row = shown[level]
        assert int(row["steps"]) == want["steps"] and int(row["tokens measured"]) == want["measured"]
        assert int(row["tokens planned"]) == want["tokens"] and int(row["waiting"]) == want["waiting"]
        for key in ("examples", "tokens_cut", "cut", "prompt_cut", "skipped_no_label",
                    "skipped_too_long", "deferred"):
            assert int(row[key.replace("_", " ")]) == want[key], (level, key)
    if (out / "curriculum_plan.json").exists():
        assert "## Per level: fed against the plan" in md
    pngs = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md)
    assert len(pngs) >= 3
    for name in pngs:
        assert (out / name).stat().st_size > 5000, name
        assert matplotlib.image.imread(out / name)[..., :3].var() > 1e-3, f"{name} is one colour"
    return md


def _cells(md: str, heading: str) -> list[list[str]]:
    after = md.split(heading, 1)[1]
    lines = [ln for ln in after[after.index("|"):].split("\n\n", 1)[0].splitlines()]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if "---|" not in ln]
