"""Checks the end-to-end tests run on a finished `axolotl train`: the plan training wrote (and the
`plan` CLI) and the log against what the model's forward received (tests/plugins/fed_probe.py,
each example traced back to its dataset row), and `report` against the log."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import matplotlib.image
import yaml

from axolotl_curriculum.commands import report
from axolotl_curriculum.testing import axolotl_env
from axolotl_curriculum.core.plan import STEP_COUNTS

def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "curriculum_log.jsonl").read_text().splitlines()]


def forwards(out: Path, rank: int = 0) -> list[dict]:
    """What the model's forward received per training micro-step on `rank` (the fed probe)."""
    return [json.loads(line) for line in (out / f"forward.rank{rank}.jsonl").read_text().splitlines()]


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


def digest(ids) -> str:
    """tests/plugins/fed_probe.py's key of an example's token ids."""
    return hashlib.sha1(json.dumps([int(t) for t in ids]).encode()).hexdigest()[:16]


def pad_token_id(out: Path) -> int | None:
    """The pad token's id, from the tokenizer training saved."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(out).pad_token_id


def examples_in(forward: dict, pad_id: int | None) -> list[list[tuple[list[int], list[int]]]]:
    """Per row of one forward's inputs, its examples as (token ids, labels), read from the
    tensors: padding (attention_mask 0, or a packed row's trailing run of pad tokens without
    labels) left out; a packed row's examples split where position_ids restart at 0."""
    out = []
    for r, ids in enumerate(forward["input_ids"]):
        labels = forward["labels"][r]
        mask = forward["attention_mask"][r] if "attention_mask" in forward else [1] * len(ids)
        pos = forward["position_ids"][r] if "position_ids" in forward else None
        pieces: list[tuple[list[int], list[int]]] = []
        for i, (t, label, m) in enumerate(zip(ids, labels, mask)):
            if not m:
                continue
            if not pieces or (pos is not None and pos[i] == 0):
                pieces.append(([], []))
            pieces[-1][0].append(t)
            pieces[-1][1].append(label)
        while pieces and all(t == pad_id for t in pieces[-1][0]) and \
                all(label == -100 for label in pieces[-1][1]):
            pieces.pop()
        out.append(pieces)
    return out


def cut_kind(row: dict, ids: list[int], labels: list[int]) -> str | None:
    """How `ids`/`labels` were cut from `row` (a dataset row): "whole", "cut" (its head), or
    "prompt_cut" (its first h tokens, then a later piece), or None if it is no cut of it."""
    rid, rlab = row["input_ids"], row["labels"]
    n = len(ids)
    if ids == rid[:n] and labels == rlab[:n]:
        return "whole" if n == len(rid) else "cut"
    for h in range(n):
        if h and (ids[h - 1] != rid[h - 1] or labels[h - 1] != rlab[h - 1]):
            break
        tail, tail_labels = ids[h:], labels[h:]
        for s in range(h + 1, len(rid) - len(tail) + 1):
            if rid[s:s + len(tail)] == tail and rlab[s:s + len(tail)] == tail_labels:
                return "prompt_cut"
    return None


WITNESSED = ("steps", "examples", "tokens", "tokens_cut", "cut", "prompt_cut")


def fed_by_forward(out: Path, ranks: int = 1) -> dict[int, dict[int, dict]]:
    """Per rank and 1-based step, what the model's forward received (the fed probe), each
    example traced to the dataset row its micro-batch fetched and checked to be a cut of it:
    micro-batches, positions (padding included), examples, tokens, the longest example, tokens
    cut and how each was cut, and each example's (row, length, has a scored label)."""
    pad_id = pad_token_id(out)
    rows = [json.loads(line) for line in (out / "train_rows.jsonl").read_text().splitlines()]
    by_rank = {}
    for rank in range(ranks):
        # the rows fetched, keyed by the digest of the token ids each fetch returned (workers
        # fetch out of order; the key only names the row, the check below is on the row itself)
        fetched: dict[str, list[int]] = {}
        for line in (out / f"fetched.rank{rank}.jsonl").read_text().splitlines():
            row, key = json.loads(line)
            fetched.setdefault(key, []).append(row)
        steps: dict[int, dict] = {}
        for forward in forwards(out, rank):
            st = steps.setdefault(forward["step"], {
                "micro_batches": 0, "positions": 0, "examples": 0, "tokens": 0, "longest": 0,
                "tokens_cut": 0, "whole": 0, "cut": 0, "prompt_cut": 0, "fed": []})
            st["micro_batches"] += 1
            st["positions"] += sum(len(ids) for ids in forward["input_ids"])
            for pieces in examples_in(forward, pad_id):
                for ids, labels in pieces:
                    [row, *_] = fetched.get(digest(ids)) or [None]
                    assert row is not None, f"step {forward['step']}: an example no fetch returned"
                    fetched[digest(ids)].remove(row)
                    kind = cut_kind(rows[row], ids, labels)
                    assert kind is not None, (forward["step"], rank, row, ids)
                    st[kind] += 1
                    st["examples"] += 1
                    st["tokens"] += len(ids)
                    st["longest"] = max(st["longest"], len(ids))
                    st["tokens_cut"] += len(rows[row]["input_ids"]) - len(ids)
                    st["fed"].append((row, len(ids), any(x != -100 for x in labels[1:])))
        by_rank[rank] = steps
    return by_rank


def assert_plan_matches_fed(out: Path, ranks: int = 1) -> dict:
    """curriculum_plan.json (written by training at its start) projects, per level, exactly
    what the model's forward received (the fed probe, all ranks together); each rank's log says
    what its forward received; every example is a cut of its dataset row, no longer than its
    level's input_len, with a scored label, and never twice in a step. Returns the plan."""
    plan = json.loads((out / "curriculum_plan.json").read_text())
    assert plan["total"]["exact"]
    fed = fed_by_forward(out, ranks)
    level_of, input_len, first = {}, {}, 1
    for lv in plan["levels"]:
        for step in range(first, first + lv["steps"]):
            level_of[step] = lv["level"]
        input_len[lv["level"]] = lv["input_len"]
        first += lv["steps"]
    steps = sorted(fed[0])
    assert steps == list(range(1, first)), "every planned step was fed, and only those"
    assert all(sorted(fed[r]) == steps for r in fed)
    got = {lv["level"]: dict.fromkeys(WITNESSED, 0) | {"positions": 0} for lv in plan["levels"]}
    logged = {(r["rank"], r["step"]): r for r in records(out)}
    for step in steps:
        g = got[level_of[step]]
        g["steps"] += 1
        rows_in_step = []
        for rank in fed:
            st = fed[rank][step]
            for key in ("examples", "tokens", "tokens_cut", "cut", "prompt_cut", "positions"):
                g[key] += st[key]
            rows_in_step += [row for row, _, _ in st["fed"]]
            assert all(n <= input_len[level_of[step]] and scored for _, n, scored in st["fed"]), step
            log = logged[(rank, step)]  # the log says what this rank's forward received
            assert (log["level"], log["micro_batches"], log["tokens"], log["max_example_len"]) == \
                (level_of[step], st["micro_batches"], st["tokens"], st["longest"]), (rank, step)
        assert len(rows_in_step) == len(set(rows_in_step)), f"an example fed twice in step {step}"
        head = logged[(0, step)]  # rank 0's global_* counts: the whole step, all ranks
        assert all(head[f"global_{key}"] == sum(fed[r][step][key] for r in fed)
                   for key in ("examples", "tokens", "tokens_cut", "cut", "prompt_cut")), step
    compared = [*WITNESSED, *(["positions"] if "positions" in plan["levels"][0] else [])]
    for lv in plan["levels"]:
        assert {k: lv[k] for k in compared} == {k: got[lv["level"]][k] for k in compared}, lv["level"]
    return plan


def plan_cli(config: Path, out: Path, *extra: str) -> dict:
    """`axolotl-curriculum plan CONFIG --out DIR`; its plan.json."""
    plugins = str(Path(__file__).with_name("plugins"))  # a config may list the test probes
    env = axolotl_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (plugins, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(["axolotl-curriculum", "plan", str(config), "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=300)
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
