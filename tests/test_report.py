"""`report`: synthetic run logs in, report.md and figures out, checked against the lines written."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path

import matplotlib.image
import pytest

from axolotl_curriculum.commands import report

LEVELS = [(32, 10), (64, 12), (128, None)]  # (input_len, max_steps)
COUNTS = ("examples", "tokens", "tokens_cut", "cut", "prompt_cut", "skipped_no_label",
          "skipped_too_long", "deferred")


def level_at(step: int) -> int:
    end = 0
    for k, (_, steps) in enumerate(LEVELS):
        end += steps or 10**9
        if step <= end:
            return k
    raise AssertionError


def make_lines(steps: range, ranks: int, *, seed: int, sense: bool = False) -> list[dict]:
    rng = random.Random(seed)
    lines = []
    for step in steps:
        level = level_at(step)
        input_len = LEVELS[level][0]
        decision = None
        if sense and step % 5 == 0:
            action = "advance" if level_at(step + 2) != level else "hold"
            action = "backoff" if step == 25 else action
            decision = {"decision": action, "reason": f"synthetic {action} at {step}",
                        "grad_cv": None if step == 5 else rng.uniform(0.1, 0.5),
                        "spikes": rng.randint(0, 2), "loss_slope": rng.uniform(-0.01, 0.01),
                        "window": 10, "steps_in_level": step}
        for rank in range(ranks):
            line = {"step": step, "rank": rank, "level": level, "input_len": input_len,
                    "truncation": "head", "max_example_len": rng.randint(input_len // 2, input_len),
                    "tokens": rng.randint(200, 400), "micro_batches": 2,
                    "loss": None if step == 3 else 3.0 - 0.02 * step + rng.uniform(0, 0.2),
                    "grad_norm": None if step == 4 else rng.uniform(0.5, 1.5)}
            if rank == 0:
                line.update({f"global_{k}": rng.randint(0, 50) for k in COUNTS})
                line["global_tokens"] = rng.randint(400 * ranks, 800 * ranks)
                line["global_waiting"] = rng.randint(0, 9)
            if decision:
                line.update(decision)
            lines.append(line)
    return lines


def write_run(out: Path, lines: list[dict], *, sense=False, summary=True, plan=True, tail=""):
    out.mkdir(parents=True, exist_ok=True)
    (out / "curriculum_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + tail)
    levels = [{"input_len": n, "max_steps": s} for n, s in LEVELS]
    if summary:
        block = {"levels": levels, "truncation": "head", "budget": "tokens",
                 "sense_grad": {"max_grad_cv": 0.25, "max_spikes": 1} if sense else None}
        fed = [{"level": k, "input_len": LEVELS[k][0], "truncation": "head", "steps": v["steps"],
                **{f"global_{key}": v[key] for key in (*COUNTS, "waiting")}}
               for k, v in sorted(expected(lines).items())]
        (out / "curriculum_summary.json").write_text(json.dumps(
            {"curriculum": block, "levels": fed, "never_fits": 0}))
    if plan:
        (out / "curriculum_plan.json").write_text(json.dumps({"levels": [
            {"level": k, "input_len": n, "steps": s or 8, "examples": 100 * (k + 1),
             "tokens": 5000 + k, "tokens_cut": 70 + k, "cut": 40 + k, "prompt_cut": k,
             "skipped_no_label": 2, "skipped_too_long": 0, "deferred": 1, "waiting": 3} for k, (n, s) in enumerate(LEVELS)]}))


def expected(lines: list[dict]) -> dict[int, dict]:
    """Per level, the sums the report must show: the latest line per (step, rank) counts."""
    latest = {(r["step"], r["rank"]): r for r in lines}
    out: dict[int, dict] = defaultdict(lambda: defaultdict(int))
    steps: dict[int, set] = defaultdict(set)
    for (step, rank), r in sorted(latest.items()):
        steps[r["level"]].add(step)
        out[r["level"]]["tokens measured"] += r["tokens"]
        if rank == 0:
            for k in COUNTS:
                out[r["level"]][k] += r[f"global_{k}"]
            out[r["level"]]["waiting"] = r["global_waiting"]
    for level, s in steps.items():
        out[level]["steps"] = len(s)
    return out


def cells(md: str, heading: str) -> list[list[str]]:
    """The rows (header first) of the first table after `heading`."""
    after = md.split(heading, 1)[1].lstrip("\n")
    rows = [ln for ln in after[after.index("|"):].split("\n\n", 1)[0].splitlines()]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows if "---|" not in row]


def table(md: str, heading: str) -> list[dict]:
    header, *rows = cells(md, heading)
    return [dict(zip(header, row)) for row in rows]


def check_report(out: Path, lines: list[dict], figures: int) -> str:
    md = (out / "report.md").read_text()
    want = expected(lines)
    rows = {int(r["level"]): r for r in table(md, "## Per level: what was fed")}
    assert set(want) <= set(rows)  # a level not reached is listed where a summary/plan names it
    assert all(int(rows[k]["steps"]) == 0 for k in set(rows) - set(want))
    for level, sums in want.items():
        row = rows[level]
        assert int(row["input_len"]) == LEVELS[level][0]
        for key in ("steps", "tokens measured", "waiting"):
            assert int(row[key]) == sums[key], (level, key)
        assert int(row["examples"]) == sums["examples"]
        assert int(row["tokens planned"]) == sums["tokens"]
        for key in ("tokens_cut", "cut", "prompt_cut", "skipped_no_label", "skipped_too_long",
                    "deferred"):
            assert int(row[key.replace("_", " ")]) == sums[key], (level, key)
    pngs = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md)
    assert len(pngs) == figures
    for name in pngs:
        path = out / name
        assert path.stat().st_size > 5000, name
        pixels = matplotlib.image.imread(path)
        assert pixels[..., :3].var() > 1e-3, f"{name} is one colour"
    return md


def test_single_rank(tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "elsewhere"
    lines = make_lines(range(1, 31), 1, seed=1)
    write_run(run_dir, lines)
    (run_dir / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": 10, "loss": 2.5}, {"step": 10, "eval_loss": 2.6},
        {"step": 30, "eval_loss": 2.2}]}))
    assert report.run(run_dir, out) == 0
    md = check_report(out, lines, figures=3)
    assert not (run_dir / "report.md").exists()
    assert "WARNING" not in md and "sense_grad decisions" not in md
    assert "summary.json, level" not in md  # the summary agrees with the log
    header, *rows = cells(md, "## Per level: fed against the plan")
    projected = json.loads((run_dir / "curriculum_plan.json").read_text())["levels"]
    want = expected(lines)
    for lv, row in zip(projected, rows):  # each fed column has the plan's value right beside it
        assert int(row[0]) == lv["level"]
        for key in ("steps", "examples", "tokens", "tokens_cut", "cut", "deferred", "waiting"):
            i = header.index(key.replace("_", " "))
            fed, plan = want[lv["level"]][key], lv[key]
            assert (int(row[i]), header[i + 1], int(row[i + 1])) == (fed, "plan", plan)
    assert "wrote" in capsys.readouterr().out
    summary = json.loads((run_dir / "curriculum_summary.json").read_text())
    summary["levels"][1]["global_examples"] += 1
    summary["levels"][2]["global_cut"] += 2
    (run_dir / "curriculum_summary.json").write_text(json.dumps(summary))
    assert report.run(run_dir, out) == 0
    md = (out / "report.md").read_text()
    examples, cut = expected(lines)[1]["examples"], expected(lines)[2]["cut"]
    assert f"curriculum_summary.json, level 1: global_examples {examples + 1} (log: {examples})" in md
    assert f"curriculum_summary.json, level 2: global_cut {cut + 2} (log: {cut})" in md


def test_two_ranks_interleaved_with_sense_grad(tmp_path):
    lines = make_lines(range(1, 41), 2, seed=2, sense=True)
    random.Random(0).shuffle(lines)
    write_run(tmp_path, lines, sense=True)
    assert report.run(tmp_path) == 0
    md = check_report(tmp_path, lines, figures=4)
    assert "WARNING" not in md
    assert "ranks: 2 (0, 1)" in md
    assert "max_grad_cv 0.25, max_spikes 1, max_loss_slope 0.001" in md  # defaults fill the gaps
    for r in lines:
        if r["rank"] == 0 and r.get("decision") in ("advance", "backoff"):
            assert r["reason"] in md
    holds = sum(r["rank"] == 0 and r.get("decision") == "hold" for r in lines)
    assert f"{holds} `hold` checks" in md


def test_ranks_disagree_is_loud(tmp_path, capsys):
    lines = make_lines(range(1, 31), 2, seed=3)
    for r in lines:
        if r["rank"] == 1 and r["step"] in (7, 8):
            r["level"] += 1
        if r["rank"] == 1 and r["step"] == 12:
            r["micro_batches"] = 3
    lines = [r for r in lines if not (r["rank"] == 1 and r["step"] == 15)]
    write_run(tmp_path, lines)
    assert report.run(tmp_path) == 0
    md = (tmp_path / "report.md").read_text()
    assert "**WARNING: ranks disagree on the level at steps 7-8**" in md
    assert "**WARNING: ranks disagree on micro_batches at steps 12**" in md
    assert "**WARNING: rank 1 is missing steps 15**" in md
    assert "WARNING: ranks disagree on the level" in capsys.readouterr().err


def test_resumed_run(tmp_path):
    """Steps 21-25 were written again after resuming from checkpoint-20: the later lines count."""
    first = make_lines(range(1, 26), 2, seed=4)
    again = make_lines(range(21, 36), 2, seed=5)
    lines = first + again
    write_run(tmp_path, lines)
    for step, loss in ((10, 2.8), (20, 2.5)):
        ckpt = tmp_path / f"checkpoint-{step}"
        ckpt.mkdir()
        (ckpt / "trainer_state.json").write_text(
            json.dumps({"log_history": [{"step": step, "eval_loss": loss}]}))
    assert report.run(tmp_path) == 0
    md = check_report(tmp_path, lines, figures=3)
    assert "WARNING" not in md
    assert "steps: 35 (1 to 35)" in md
    assert "10 lines were written again" in md
    assert report.load(tmp_path).eval_loss == [(20, 2.5)]  # the newest checkpoint's state


def test_killed_run(tmp_path, capsys):
    lines = make_lines(range(1, 19), 2, seed=6)
    lines = [r for r in lines if not (r["rank"] == 1 and r["step"] == 18)]  # rank 1 stopped first
    cut = json.dumps(make_lines(range(19, 20), 1, seed=7)[0])[:40]
    write_run(tmp_path, lines, summary=False, plan=False, tail=cut)
    assert report.run(tmp_path) == 0
    md = check_report(tmp_path, lines, figures=3)
    assert "WARNING" not in md
    assert [r["level"] for r in table(md, "## Per level: what was fed")] == ["0", "1"]  # no summary
    assert "no curriculum_summary.json" in md and "No curriculum_plan.json" in md
    assert "rank 1's log ends at step 17" in md
    assert "cut short" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["no dir", "no log", "empty log", "only a cut line"])
def test_bad_input(tmp_path, capsys, case):
    run_dir = tmp_path / "run"
    if case != "no dir":
        run_dir.mkdir()
    if case == "empty log":
        (run_dir / "curriculum_log.jsonl").write_text("")
    if case == "only a cut line":
        (run_dir / "curriculum_log.jsonl").write_text('{"step": 1, "ra')
    assert report.run(run_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("axolotl-curriculum report: error: ") and str(run_dir) in err[-1]
    assert not (run_dir / "report.md").exists()


def test_a_re_score_is_listed_with_its_step_and_level(tmp_path):
    lines = make_lines(range(1, 31), ranks=2, seed=4)
    for line in lines:
        if line["step"] == 8:
            line.update(rescore_level=1, rescore_from_step=11, rescore_changed=17, rescore_seconds=0.5)
    write_run(tmp_path, lines)
    assert report.run(tmp_path) == 0
    md = (tmp_path / "report.md").read_text()
    assert ("- re-scored (rescore) at step 8 for level 1, fed from step 11: 17 examples admitted "
            "instead of others (0.5 s)") in md
    assert md.count("re-scored") == 1
