"""Cut modes and budgets through the real `axolotl train`, on instruction data with odd rows."""

import json
import math

import pytest

from axolotl_curriculum.testing import write_instructions
from e2e_checks import (assert_cli_plan_equals_training, assert_plan_matches_fed,
                        fed_by_forward)

pytestmark = pytest.mark.e2e

LEVELS = [{"input_len": 16, "max_steps": 8}, {"input_len": 48, "max_steps": 8}, {"input_len": 128}]


@pytest.fixture(scope="module")
def instructions(tmp_path_factory):
    return write_instructions(tmp_path_factory.mktemp("instr") / "alpaca.jsonl", n=300, seed=3,
                              edge=True)


def alpaca(path, **overrides):
    return dict(datasets=[{"path": str(path), "type": "alpaca", "ds_type": "json"}],
                train_on_inputs=False, max_steps=24, excess_length_strategy="truncate", **overrides)


WITNESSED = ("examples", "tokens", "tokens_cut", "cut", "prompt_cut")


def check_accounting(run, levels):
    """Each step's log line and the end-of-run summary against what the model's forward
    received (the fed probe; every example traced back to its dataset row and checked to be a
    cut of it). Levels follow the configured caps. Returns (log lines, fed per step)."""
    recs = run.rank(0)
    assert [r["step"] for r in recs] == list(range(1, 25))
    fed = fed_by_forward(run.out)[0]
    assert sorted(fed) == list(range(1, 25))
    level_of, first = {}, 1
    for k, level in enumerate(levels):
        n = level.get("max_steps", 25 - first)
        level_of.update({s: k for s in range(first, first + n)})
        first += n
    for r in recs:
        st = fed[r["step"]]
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]), r
        assert r["level"] == level_of[r["step"]] and st["examples"] > 0
        input_len = levels[r["level"]]["input_len"]
        assert all(n <= input_len and scored for _, n, scored in st["fed"]), r["step"]
        # one rank: the step's planned counts are what its forward received
        assert {k: r[f"global_{k}"] for k in WITNESSED} == {k: st[k] for k in WITNESSED}, r["step"]
        assert (r["tokens"], r["max_example_len"]) == (st["tokens"], st["longest"]), r["step"]
    summary = json.loads((run.out / "curriculum_summary.json").read_text())
    for k, level in enumerate(levels):
        steps = [s for s in fed if level_of[s] == k]
        row = summary["levels"][k]
        assert row["input_len"] == level["input_len"] and row["steps"] == len(steps)
        assert {key: row[f"global_{key}"] for key in WITNESSED} == \
            {key: sum(fed[s][key] for s in steps) for key in WITNESSED}, k
    assert "curriculum summary" in run.output
    return recs, fed


@pytest.mark.axolotl_api
def test_segment_mode_with_prompt_cuts(axolotl_train, instructions):
    run = axolotl_train(**alpaca(instructions), probe=True,
                        curriculum={"levels": LEVELS, "truncation": "segment", "keep_prompt_head": 2})
    recs, fed = check_accounting(run, LEVELS)
    assert all(r["truncation"] == "segment" for r in recs)
    assert sum(fed[s]["prompt_cut"] for s in range(1, 9)) > 0  # level 0 kept answers whole
    assert sum(r["global_tokens_cut"] for r in recs if r["level"] == 0) > 0
    assert sum(r["global_prompt_cut"] for r in recs if r["level"] == 0) > 0
    # prompts longer than a level are cut from the left; only rows with no answer are skipped
    assert sum(r["global_skipped_no_label"] for r in recs if r["level"] == 2) <= \
        sum(r["global_skipped_no_label"] for r in recs if r["level"] == 0)
    assert "'curriculum/global_tokens_cut'" in run.output  # accounting reaches the log line
    # what the plan (training's and the CLI's, on this long-tailed instruction data) projected
    plan = assert_plan_matches_fed(run.out)
    assert plan["levels"][0]["prompt_cut"] > 0 and plan["levels"][0]["tokens_cut"] > 0
    assert_cli_plan_equals_training(run, run.out.parent / "plan")


def test_filter_mode_defers_long_rows_until_a_level_admits_them(axolotl_train, instructions):
    levels = [{"input_len": 48, "max_steps": 8}, {"input_len": 80, "max_steps": 8}, {"input_len": 128}]
    run = axolotl_train(**alpaca(instructions), probe=True,
                        curriculum={"levels": levels, "truncation": "filter"})
    recs, fed = check_accounting(run, levels)
    # whole examples only, as the forward received them
    assert all(fed[s]["whole"] == fed[s]["examples"] for s in range(1, 17))
    assert sum(r["global_deferred"] for r in recs if r["level"] == 0) > 0
    waiting = [r["global_waiting"] for r in recs]
    assert max(waiting) > 0 and waiting[-1] == 0  # the last level admits what waited
    plan = assert_plan_matches_fed(run.out)
    assert plan["levels"][0]["deferred"] > 0


def test_filter_level_that_admits_nothing_is_skipped(axolotl_train, instructions):
    levels = [{"input_len": 4, "max_steps": 8}, {"input_len": 64, "max_steps": 8}, {"input_len": 128}]
    run = axolotl_train(**alpaca(instructions), probe=True,
                        curriculum={"levels": levels, "truncation": "filter"})
    assert "level 0 (input_len 4, filter) admits 0 examples, fewer than the 1 micro-batches of " \
        "a step; skipping it" in run.output
    recs = run.rank(0)
    assert recs[0]["level"] == 1 and [r["step"] for r in recs] == list(range(1, 25))
    assert assert_plan_matches_fed(run.out)["levels"][0]["steps"] == 0


def test_examples_budget_feeds_fewer_tokens_at_short_levels(axolotl_train, instructions):
    run = axolotl_train(**alpaca(instructions), probe=True, curriculum={"levels": LEVELS})
    assert_plan_matches_fed(run.out)
    tokens = run.rank(0)
    run = axolotl_train(**alpaca(instructions), probe=True,
                        curriculum={"levels": LEVELS, "budget": "examples"})
    assert assert_plan_matches_fed(run.out)["settings"]["budget"] == "examples"
    examples = run.rank(0)
    short_tokens = [r["tokens"] for r in tokens if r["level"] == 0]
    short_examples = [r["tokens"] for r in examples if r["level"] == 0]
    assert min(short_tokens) > 0.9 * 2 * 128  # packed rows stay full
    assert max(short_examples) < 0.5 * min(short_tokens)
    ex0 = sum(r["global_examples"] for r in examples if r["level"] == 0) / 8
    ex2 = sum(r["global_examples"] for r in examples if r["level"] == 2) / 8
    assert 0.5 < ex0 / ex2 < 2  # about as many examples per step as at full length
