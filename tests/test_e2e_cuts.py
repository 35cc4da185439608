"""Cut modes and budgets through the real `axolotl train`, on instruction data with odd rows."""

import json
import math

import pytest

from axolotl_curriculum.demo import write_instructions
from e2e_checks import assert_cli_plan_equals_training, assert_plan_matches_log

pytestmark = pytest.mark.e2e

LEVELS = [{"input_len": 16, "max_steps": 8}, {"input_len": 48, "max_steps": 8}, {"input_len": 128}]


@pytest.fixture(scope="module")
def instructions(tmp_path_factory):
    return write_instructions(tmp_path_factory.mktemp("instr") / "alpaca.jsonl", n=300, seed=3,
                              edge=True)


def alpaca(path, **overrides):
    return dict(datasets=[{"path": str(path), "type": "alpaca", "ds_type": "json"}],
                train_on_inputs=False, max_steps=24, excess_length_strategy="truncate", **overrides)


COUNTS = ("global_examples", "global_tokens", "global_tokens_cut", "global_skipped_no_label",
          "global_skipped_too_long", "global_deferred")


def check_accounting(run, levels):
    recs = run.rank(0)
    assert [r["step"] for r in recs] == list(range(1, 25))
    for r in recs:
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]), r
        assert r["max_example_len"] <= r["input_len"]
        assert r["global_examples"] > 0 and r["tokens"] > 0
        # one rank: the planned tokens are the measured ones (the batch holds nothing else)
        assert r["global_tokens"] == r["tokens"], r
    summary = json.loads((run.out / "curriculum_summary.json").read_text())
    for k, level in enumerate(levels):
        mine = [r for r in recs if r["level"] == k]
        row = summary["levels"][k]
        assert row["input_len"] == level["input_len"] and row["steps"] == len(mine)
        assert all(row[key] == sum(r[key] for r in mine) for key in COUNTS), row
    assert "curriculum summary" in run.output
    return recs


@pytest.mark.axolotl_api
def test_segment_mode_with_prompt_cuts(axolotl_train, instructions):
    run = axolotl_train(**alpaca(instructions), curriculum={"levels": LEVELS, "truncation": "segment",
                                                            "keep_prompt_head": 2})
    recs = check_accounting(run, LEVELS)
    assert all(r["truncation"] == "segment" for r in recs)
    assert sum(r["global_tokens_cut"] for r in recs if r["level"] == 0) > 0
    assert sum(r["global_prompt_cut"] for r in recs if r["level"] == 0) > 0
    # prompts longer than a level are cut from the left; only rows with no answer are skipped
    assert sum(r["global_skipped_no_label"] for r in recs if r["level"] == 2) <= \
        sum(r["global_skipped_no_label"] for r in recs if r["level"] == 0)
    assert "'curriculum/global_tokens_cut'" in run.output  # accounting reaches the log line
    # what the plan (training's and the CLI's, on this long-tailed instruction data) projected
    plan = assert_plan_matches_log(run.out)
    assert plan["levels"][0]["prompt_cut"] > 0 and plan["levels"][0]["tokens_cut"] > 0
    assert_cli_plan_equals_training(run, run.out.parent / "plan")


@pytest.mark.axolotl_api
def test_filter_mode_defers_long_rows_until_a_level_admits_them(axolotl_train, instructions):
    levels = [{"input_len": 48, "max_steps": 8}, {"input_len": 80, "max_steps": 8}, {"input_len": 128}]
    run = axolotl_train(**alpaca(instructions), curriculum={"levels": levels, "truncation": "filter"})
    recs = check_accounting(run, levels)
    assert all(r["global_tokens_cut"] == 0 for r in recs if r["level"] < 2)  # whole examples only
    assert sum(r["global_deferred"] for r in recs if r["level"] == 0) > 0
    waiting = [r["global_waiting"] for r in recs]
    assert max(waiting) > 0 and waiting[-1] == 0  # the last level admits what waited
    plan = assert_plan_matches_log(run.out)
    assert plan["levels"][0]["deferred"] > 0


def test_filter_level_that_admits_nothing_is_skipped(axolotl_train, instructions):
    levels = [{"input_len": 4, "max_steps": 8}, {"input_len": 64, "max_steps": 8}, {"input_len": 128}]
    run = axolotl_train(**alpaca(instructions), curriculum={"levels": levels, "truncation": "filter"})
    assert "level 0 (input_len 4, filter) admits 0 examples, fewer than the 1 micro-batches of " \
        "a step; skipping it" in run.output
    recs = run.rank(0)
    assert recs[0]["level"] == 1 and [r["step"] for r in recs] == list(range(1, 25))
    assert assert_plan_matches_log(run.out)["levels"][0]["steps"] == 0


def test_examples_budget_feeds_fewer_tokens_at_short_levels(axolotl_train, instructions):
    run = axolotl_train(**alpaca(instructions), curriculum={"levels": LEVELS})
    assert_plan_matches_log(run.out)
    tokens = run.rank(0)
    run = axolotl_train(**alpaca(instructions), curriculum={"levels": LEVELS, "budget": "examples"})
    assert assert_plan_matches_log(run.out)["settings"]["budget"] == "examples"
    examples = run.rank(0)
    short_tokens = [r["tokens"] for r in tokens if r["level"] == 0]
    short_examples = [r["tokens"] for r in examples if r["level"] == 0]
    assert min(short_tokens) > 0.9 * 2 * 128  # packed rows stay full
    assert max(short_examples) < 0.5 * min(short_tokens)
    ex0 = sum(r["global_examples"] for r in examples if r["level"] == 0) / 8
    ex2 = sum(r["global_examples"] for r in examples if r["level"] == 2) / 8
    assert 0.5 < ex0 / ex2 < 2  # about as many examples per step as at full length
