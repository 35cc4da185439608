"""examples/custom_loop.py: the curriculum in a hand-written loop, 1 process and 2 gloo ranks.

What each level fed is read from the model's forward (a probe hooked on from the test), not from
the curriculum's own log; the log is checked against it.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from axolotl_curriculum.testing import axolotl_env
from custom_loop_probe import load_example, probe, read

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "custom_loop_probe.py"
INPUT_LENS = (32, 64, 128)


def records(work: Path, rank: int | None = None) -> list[dict]:
    lines = (work / "out" / "curriculum_log.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    return sorted((r for r in recs if rank is None or r["rank"] == rank), key=lambda r: r["step"])


DELAY = 2  # steps from a decision to the data: 1 + ceil(2 / GRAD_ACCUM) without workers


def witnessed_levels(forwards: list[dict], grad_accum: int) -> list[int | None]:
    """Per optimizer step, the level its forwards show. Every row is 70-128 tokens long, so
    level 0 cuts each to exactly 32 tokens, level 1 to exactly 64, and level 2 feeds whole rows."""
    levels = []
    for i in range(0, len(forwards), grad_accum):
        lengths = {n for f in forwards[i:i + grad_accum] for n in f["lengths"]}
        levels.append(0 if lengths == {32} else 1 if lengths == {64}
                      else 2 if min(lengths) > 64 else None)
    return levels


def check_fed(recs: list[dict], forwards: list[list[int]], grad_accum: int, dataset) -> None:
    """What the model's forward received, against a row-by-row reference from `dataset[i]` and
    the schedule the gate's logged decisions and the caps imply; the log says what was fed."""
    assert len(forwards) == grad_accum * len(recs) == grad_accum * 30
    levels = witnessed_levels(forwards, grad_accum)
    assert None not in levels, levels
    # every row fed is the head of a dataset row, cut to its step's input_len
    rows = [dataset[i]["input_ids"] for i in range(len(dataset))]
    by_head = {tuple(ids[:32]): ids for ids in rows}
    assert len(by_head) == len(rows)
    for k, forward in enumerate(forwards):
        for ids in forward["ids"]:
            row = by_head[tuple(ids[:32])]
            assert ids == row[:INPUT_LENS[levels[k // grad_accum]]], k
    # levels begin where the caps (10 steps) or an earlier logged advance put them: a decision
    # after step d announces the next level from step d + DELAY, and the data follows it
    begin = [1]
    for level in (1, 2):
        advances = [r for r in recs if r.get("decision") == "advance" and r["level"] == level - 1]
        for r in advances:
            assert r["reason"].endswith(f"level {level} from step {r['step'] + DELAY}"), r
        begin.append(min([begin[-1] + 10] + [r["step"] + DELAY for r in advances]))
    expected = [sum(step >= b for b in begin) - 1 for step in range(1, 31)]
    assert levels == expected
    # the log says what was fed: the level, its input_len and the longest row of each step
    assert [r["level"] for r in recs] == levels
    assert [r["input_len"] for r in recs] == [INPUT_LENS[lv] for lv in levels]
    assert [r["max_example_len"] for r in recs] == [
        max(max(f["lengths"]) for f in forwards[grad_accum * i:grad_accum * (i + 1)])
        for i in range(len(recs))]


def test_plain_loop_feeds_each_level_and_resumes_exactly(tmp_path):
    example = load_example()
    whole = tmp_path / "whole"
    example.main(whole, on_model=probe(tmp_path / "probe.jsonl"))
    forwards = read(tmp_path / "probe.jsonl")
    (tmp_path / "reference").mkdir()
    _, dataset = example.prepare(tmp_path / "reference", whole / "model")
    recs = records(whole)
    check_fed(recs, forwards, example.GRAD_ACCUM, dataset)

    # stopped at step 13 (level 1 or 2, mid-epoch), then resumed from the state dict, each half
    # in its own process with the probe on the model's forward
    stopped = tmp_path / "stopped"
    for extra in (["--stop-at", "13", "--probe", "first"], ["--resume", "--probe", "second"]):
        proc = subprocess.run([sys.executable, str(PROBE), str(stopped), "--plain", *extra],
                              env=axolotl_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = read(stopped / "first.rank0.jsonl"), read(stopped / "second.rank0.jsonl")
    # the model's forward received exactly the uninterrupted run's rows, before and after
    assert len(first) == 13 * example.GRAD_ACCUM
    assert [f["ids"] for f in first] == [f["ids"] for f in forwards[:len(first)]]
    assert [f["ids"] for f in second] == [f["ids"] for f in forwards[len(first):]]
    resumed = records(stopped)
    keys = ("step", "level", "input_len", "max_example_len", "tokens", "global_examples",
            "global_tokens_cut", "decision", "reason")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in recs]
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in recs], rel=1e-4)
    summary = json.loads((stopped / "out" / "curriculum_summary.json").read_text())
    assert summary == json.loads((whole / "out" / "curriculum_summary.json").read_text())


def test_accelerate_loop_on_two_ranks(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu",
         "--num_processes", "2", "--main_process_port", str(port),
         str(ROOT / "tests" / "custom_loop_probe.py"), str(tmp_path)],
        env={**axolotl_env(), "PYTHONPATH": str(ROOT / "tests")}, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    example = load_example()
    (tmp_path / "reference").mkdir()
    _, dataset = example.prepare(tmp_path / "reference", tmp_path / "model")
    by_rank = []
    for rank in (0, 1):
        recs = records(tmp_path, rank)
        check_fed(recs, read(tmp_path / f"probe.rank{rank}.jsonl"), example.GRAD_ACCUM, dataset)
        by_rank.append(recs)
    r0, r1 = by_rank
    same = ("step", "level", "micro_batches", "decision", "reason")
    assert [[r.get(k) for k in same] for r in r0] == [[r.get(k) for k in same] for r in r1]
    assert [r["tokens"] for r in r0] != [r["tokens"] for r in r1]  # each rank its own share
