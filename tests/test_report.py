"""`report`: synthetic run logs in, report.md and figures out, checked against the lines written."""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure

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
    keys = ("steps", "examples", "tokens", "tokens_cut", "cut", "deferred", "waiting")
    zero = md.split("Zero at every level, fed and planned: ", 1)[-1].split(".", 1)[0].split(", ")
    for lv, row in zip(projected, rows):  # each fed count, the plan's beside it where it differs
        assert int(row[0]) == lv["level"]
        for key in keys:
            fed, plan = want[lv["level"]][key], lv[key]
            if key.replace("_", " ") not in header:  # left out: zero for every level
                assert fed == plan == 0 and key.replace("_", " ") in zero, key
                continue
            cell = row[header.index(key.replace("_", " "))]
            assert cell == (str(fed) if fed == plan else f"{fed} (plan {plan})"), (key, cell)
    differ = sum("(plan " in c for row in rows for c in row)
    assert (f"{differ} counts differ from the plan." if differ else "every count as planned.") in md
    assert len(header) < 12
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


@pytest.mark.parametrize("case", ["no dir", "no log", "empty log", "only a cut line",
                                  "the config"])
def test_bad_input(tmp_path, capsys, case):
    run_dir = tmp_path / "run"
    if case == "the config":  # `report config.yml`: the error names the folder to pass
        run_dir = tmp_path / "config.yml"
        run_dir.write_text("base_model: x\noutput_dir: ./outputs/run-7\n")
    elif case != "no dir":
        run_dir.mkdir()
    if case == "empty log":
        (run_dir / "curriculum_log.jsonl").write_text("")
    if case == "only a cut line":
        (run_dir / "curriculum_log.jsonl").write_text('{"step": 1, "ra')
    assert report.run(run_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("axolotl-curriculum report: error: ") and str(run_dir) in err[-1]
    if case == "the config":
        assert err[-1].endswith("is a file; report reads a run's folder (the run's output_dir: "
                                "axolotl-curriculum report ./outputs/run-7)")
    else:
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


# -- probes (curriculum.probes): the values at each level's end, in the text and the figures ----
PROBED = (4, 8, 10, 12, 16, 20, 22, 24, 28, 30)  # every 4 steps, each level's last step, the end
LEVEL_ENDS = {0: 10, 1: 22, 2: 30}
PASSKEY_LENGTHS, DEPTHS = (32, 64, 128), (0.1, 0.5, 0.9)
BUCKETS = ((0, 16), (16, 32), (32, 64), (64, 128))
PROBE_FIGURES = ("probes_passkey.png", "probes_position_loss.png")


def probe_values(step: int, rng: random.Random) -> dict:
    """What run/probes.py logs after `step`: the level's buckets, passkey up to the next level."""
    level = level_at(step)
    input_len, upto = LEVELS[level][0], LEVELS[min(level + 1, len(LEVELS) - 1)][0]
    values = {"probe/short": rng.uniform(2, 3)}
    for lo, hi in BUCKETS:
        if lo < input_len:
            values[f"probe/position_loss@{lo}-{hi}"] = rng.uniform(1, 4)
    for length in (n for n in PASSKEY_LENGTHS if n <= upto):
        accuracies = [rng.randint(0, 4) / 4 for _ in DEPTHS]
        values.update({f"probe/passkey@{length}/depth{d:g}": a for d, a in zip(DEPTHS, accuracies)})
        values[f"probe/passkey@{length}"] = sum(accuracies) / len(accuracies)
    return values


EVAL_DECISIONS = {  # step -> the gate's sense_eval fields (the same on every rank)
    5: {"decision": "hold", "reason": "short 2.9 > 2.5 x (1 + 0.1)", "short_before": 2.5,
        "passkey_length": 32},
    10: {"decision": "advance", "short_before": 2.5, "passkey_length": 32,
         "reason": "recovered: short 2.6 within 0.1 of 2.5, passkey@32 1 >= 0.75; level 1 from "
                   "step 11"},
    20: {"decision": "advance", "short_before": 2.6, "passkey_length": 64,
         "reason": "recovered: short 2.7 within 0.1 of 2.6, passkey@64 0.917 >= 0.75; level 2 "
                   "from step 23"},
    25: {"decision": "last_level", "reason": "the last level runs to the end"},
}


def probe_lines(seed: int, *, decisions: bool = True) -> list[dict]:
    rng = random.Random(seed)
    probes = {step: probe_values(step, rng) for step in PROBED}
    lines = make_lines(range(1, 31), 2, seed=seed)
    for line in lines:
        line.update(probes.get(line["step"], {}))
        if decisions:
            line.update(EVAL_DECISIONS.get(line["step"], {}))
    random.Random(seed).shuffle(lines)
    return lines


@pytest.fixture
def saved_figures(monkeypatch) -> dict:
    """file name -> the Figure saved to it: the data each figure was drawn from."""
    saved, savefig = {}, Figure.savefig

    def keep(fig, fname, *args, **kwargs):
        saved[Path(fname).name] = fig
        return savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def shows(cell: str, value: float | None) -> bool:
    """A table cell shows the value (to its 4 significant digits), or `-` for one not logged."""
    return cell == "-" if value is None else float(cell) == pytest.approx(value, rel=1e-3)


def end_line(lines: list[dict], level: int) -> dict:
    return next(r for r in lines if r["step"] == LEVEL_ENDS[level] and r["rank"] == 0)


def test_probes_at_each_level_end(tmp_path, saved_figures):
    lines = probe_lines(seed=11)
    write_run(tmp_path, lines)
    assert report.run(tmp_path) == 0
    md = check_report(tmp_path, lines, figures=6)  # + sense_grad (the gate) + the two probe plots
    assert "WARNING" not in md
    ends = table(md, "## Probes at each level's end")
    assert [int(r["level"]) for r in ends] == list(LEVEL_ENDS)
    for level, row in enumerate(ends):
        want = end_line(lines, level)
        assert int(row["step"]) == LEVEL_ENDS[level] and int(row["input_len"]) == LEVELS[level][0]
        assert shows(row["short"], want["probe/short"])
        for n in PASSKEY_LENGTHS:
            assert shows(row[f"passkey@{n}"], want.get(f"probe/passkey@{n}")), (level, n)
    rows = table(md, "### Position loss at each level's end")
    assert [int(r["level"]) for r in rows] == [0, 1, 2]
    for row in rows:
        want = end_line(lines, int(row["level"]))
        for lo, hi in BUCKETS:
            assert shows(row[f"{lo}-{hi}"], want.get(f"probe/position_loss@{lo}-{hi}"))
    advanced = [(int(r["step"]), r["decision"], r["reason"], r["passkey length"])
                for r in table(md, "### sense_eval decisions")]
    assert advanced == [(step, d["decision"], d["reason"], str(d["passkey_length"]))
                        for step, d in EVAL_DECISIONS.items() if d["decision"] == "advance"]
    gate = md.split("### sense_eval decisions", 1)[1].split("## Figures")[0]
    assert f"1 `hold` checks; the last, at step 5: {EVAL_DECISIONS[5]['reason']}" in gate
    check_heat_maps(saved_figures["probes_passkey.png"], lines)
    check_position_curves(saved_figures["probes_position_loss.png"], lines)
    short = [r["probe/short"] for r in sorted(lines, key=lambda r: r["step"])
             if r["rank"] == 0 and "probe/short" in r]
    [curve] = [c for c in saved_figures["report_loss.png"].axes[0].lines
               if c.get_label().startswith("probe/short")]
    assert list(curve.get_ydata()) == pytest.approx(short)


def check_heat_maps(fig: Figure, lines: list[dict]) -> None:
    """One panel per level end, each cell (length across, depth down) the end line's value."""
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == [f"level {k} end (step {s})"
                                                 for k, s in LEVEL_ENDS.items()]
    for level, ax in enumerate(panels):
        want, grid = end_line(lines, level), ax.images[0].get_array()
        lengths = [int(t.get_text()) for t in ax.get_xticklabels()]
        depths = [float(t.get_text()) for t in ax.get_yticklabels()]
        assert (lengths, depths) == (list(PASSKEY_LENGTHS), list(DEPTHS))
        texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
                 for t in ax.texts}  # (row, column) -> the value written in the cell
        for (i, j), value in np.ndenumerate(grid.filled(np.nan)):
            key = f"probe/passkey@{lengths[j]}/depth{depths[i]:g}"
            if key in want:
                assert value == want[key] and float(texts[i, j]) == pytest.approx(value, abs=0.005)
            else:  # beyond the next level's length: not measured
                assert np.isnan(value) and texts[i, j] == "-", (level, key)


def check_position_curves(fig: Figure, lines: list[dict]) -> None:
    [ax] = fig.axes
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [f"{lo}-{hi}" for lo, hi in BUCKETS]
    assert len(ax.lines) == len(LEVEL_ENDS)
    for level, curve in enumerate(ax.lines):
        want = end_line(lines, level)
        assert curve.get_label().startswith(f"level {level} end (step {LEVEL_ENDS[level]})")
        at = [labels[int(x)] for x in curve.get_xdata()]  # the buckets the level's rows reach
        assert at == [f"{lo}-{hi}" for lo, hi in BUCKETS if f"probe/position_loss@{lo}-{hi}" in want]
        assert list(curve.get_ydata()) == [want[f"probe/position_loss@{bucket}"] for bucket in at]


def test_an_earlier_probe_in_the_level_is_not_its_end(tmp_path, saved_figures):
    """Level 0 probed all-right at step 8 and all-wrong at its last step (10): the end is 10."""
    lines = probe_lines(seed=12, decisions=False)
    for r in (r for r in lines if r["step"] in (8, 10)):
        for key in [k for k in r if k.startswith("probe/passkey@")]:
            r[key] = 1.0 if r["step"] == 8 else 0.0
        r["probe/short"] = 9.0 if r["step"] == 8 else 2.0
    write_run(tmp_path, lines)
    assert report.run(tmp_path) == 0
    md = check_report(tmp_path, lines, figures=5)
    row = table(md, "## Probes at each level's end")[0]
    shown = (row["step"], row["short"], row["passkey@32"], row["passkey@64"])
    assert shown == ("10", "2", "0", "0")
    panel = next(ax for ax in saved_figures["probes_passkey.png"].axes if ax.images)
    assert panel.get_title() == "level 0 end (step 10)"
    grid = panel.images[0].get_array()
    assert grid[:, :2].tolist() == [[0.0, 0.0]] * len(DEPTHS)  # 32 and 64, every depth
    assert "sense_eval decisions" not in md


def test_without_probes_the_report_is_unchanged(tmp_path):
    """The same run with its probe keys taken out: no probe section or plots, the rest the same."""
    lines = probe_lines(seed=13, decisions=False)
    plain = [{k: v for k, v in r.items() if not k.startswith("probe/")} for r in lines]
    write_run(tmp_path / "probed", lines)
    write_run(tmp_path / "plain", plain)
    assert report.run(tmp_path / "probed") == 0 and report.run(tmp_path / "plain") == 0
    md = check_report(tmp_path / "plain", plain, figures=3).replace(str(tmp_path / "plain"), "RUN")
    assert "probe" not in md.lower()
    assert not any((tmp_path / "plain" / name).exists() for name in PROBE_FIGURES)
    probed = (tmp_path / "probed" / "report.md").read_text()
    assert all((tmp_path / "probed" / name).stat().st_size > 5000 for name in PROBE_FIGURES)
    cut = re.sub(r"\n## Probes at each level's end\n.*?(?=\n## Figures)", "", probed, flags=re.S)
    cut = re.sub(r"### (Passkey accuracy|Loss by position)[^\n]*\n\n!\[[^]]*\]\([^)]*\)\n\n?", "",
                 cut)
    assert cut.replace(str(tmp_path / "probed"), "RUN").rstrip() == md.rstrip()


def test_ranks_disagreeing_on_the_probes_is_loud(tmp_path):
    lines = probe_lines(seed=14, decisions=False)
    for r in lines:
        if r["rank"] == 1 and r["step"] == 16:
            r["probe/short"] += 0.5
    write_run(tmp_path, lines)
    assert report.run(tmp_path) == 0
    md = (tmp_path / "report.md").read_text()
    assert "**WARNING: ranks disagree on the probes at steps 16**" in md
