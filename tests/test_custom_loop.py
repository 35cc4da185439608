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

from axolotl_curriculum.demo import axolotl_env
from custom_loop_probe import load_example, probe

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_loop.py"
INPUT_LENS = (32, 64, 128)


def records(work: Path, rank: int | None = None) -> list[dict]:
    lines = (work / "out" / "curriculum_log.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    return sorted((r for r in recs if rank is None or r["rank"] == rank), key=lambda r: r["step"])


def check_fed(recs: list[dict], forwards: list[list[int]], grad_accum: int) -> None:
    """Every forward's rows respect the logged level's input_len; each level really fed."""
    assert len(forwards) == grad_accum * len(recs) == grad_accum * 30
    longest = {}
    for k, lengths in enumerate(forwards):
        rec = recs[k // grad_accum]
        assert max(lengths) <= rec["input_len"], (k, rec)
        longest[rec["level"]] = max(longest.get(rec["level"], 0), max(lengths))
    assert sorted(longest) == [0, 1, 2]
    for level, n in longest.items():  # rows are 70-128 tokens: every cut shows
        assert n > (INPUT_LENS[level - 1] if level else 0)
    assert all(r["max_example_len"] == max(max(f) for f in forwards[grad_accum * i:grad_accum * (i + 1)])
               for i, r in enumerate(recs))


def test_plain_loop_feeds_each_level_and_resumes_exactly(tmp_path):
    example = load_example()
    whole = tmp_path / "whole"
    example.main(whole, on_model=probe(tmp_path / "probe.jsonl"))
    forwards = [json.loads(line) for line in (tmp_path / "probe.jsonl").read_text().splitlines()]
    recs = records(whole)
    check_fed(recs, forwards, example.GRAD_ACCUM)
    assert any(r.get("decision") == "advance" for r in recs) or recs[10]["level"] == 1

    # stopped at step 13 (level 1 or 2, mid-epoch), then resumed from the state dict
    stopped = tmp_path / "stopped"
    for extra in (["--stop-at", "13"], ["--resume"]):
        proc = subprocess.run([sys.executable, str(EXAMPLE), str(stopped), *extra],
                              env=axolotl_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
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
    by_rank = []
    for rank in (0, 1):
        forwards = [json.loads(l) for l in (tmp_path / f"probe.rank{rank}.jsonl").read_text().splitlines()]
        recs = records(tmp_path, rank)
        check_fed(recs, forwards, example.GRAD_ACCUM)
        by_rank.append(recs)
    r0, r1 = by_rank
    same = ("step", "level", "micro_batches", "decision", "reason")
    assert [[r.get(k) for k in same] for r in r0] == [[r.get(k) for k in same] for r in r1]
    assert [r["tokens"] for r in r0] != [r["tokens"] for r in r1]  # each rank its own share
