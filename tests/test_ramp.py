"""Ramps: `levels: {ramp: ...}` against DeepSpeed's own curriculum scheduler (the witness), step
by step, and through `axolotl train`: no example the model's forward receives is longer than
DeepSpeed's length at its step."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from axolotl_curriculum import Curriculum
from axolotl_curriculum.core.schedule import Timeline
from e2e_checks import fed_by_forward


def deepspeed_lengths(start, end, steps, step_size, shape="linear", degree=2, upto=None):
    """DeepSpeed's `CurriculumScheduler` difficulty at 1-based steps 1..upto."""
    from deepspeed.runtime.data_pipeline.curriculum_scheduler import CurriculumScheduler

    schedule = {"total_curriculum_step": steps, "difficulty_step": step_size}
    if shape == "root":
        schedule["root_degree"] = degree
    scheduler = CurriculumScheduler({
        "curriculum_type": "custom", "min_difficulty": start, "max_difficulty": end,
        "schedule_type": {"linear": "fixed_linear", "root": "fixed_root"}[shape],
        "schedule_config": schedule})
    return [scheduler.update_difficulty(s) for s in range(1, (upto or steps) + 1)]


def ramp_timeline(ramp: dict) -> list[int]:
    cur = Curriculum.model_validate({"levels": {"ramp": ramp}})
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    return lambda s: timeline.input_lens[timeline.level_at(s - 1)]  # 1-based step


def test_deepspeeds_published_linear_values():
    at = ramp_timeline({"from": 2, "to": 10, "steps": 8, "step_size": 2})
    assert [at(s) for s in range(1, 11)] == [2, 4, 4, 6, 6, 8, 8, 10, 10, 10]
    assert deepspeed_lengths(2, 10, 8, 2, upto=10) == [2, 4, 4, 6, 6, 8, 8, 10, 10, 10]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_linear_and_root_ramps_follow_deepspeed_step_by_step(data):
    step_size = data.draw(st.sampled_from([1, 2, 8, 16, 64]))
    start = step_size * data.draw(st.integers(1, 8)) if step_size > 1 else data.draw(st.integers(2, 64))
    end = start + step_size * data.draw(st.integers(1, 40))
    steps = data.draw(st.integers(1, 300))
    shape = data.draw(st.sampled_from(["linear", "root"]))
    degree = data.draw(st.sampled_from([2, 3])) if shape == "root" else None
    ramp = {"from": start, "to": end, "steps": steps, "step_size": step_size, "shape": shape,
            **({"degree": degree} if degree else {})}
    at = ramp_timeline(ramp)
    want = deepspeed_lengths(start, end, steps, step_size, shape, degree or 2, upto=steps + 5)
    assert [at(s) for s in range(1, steps + 6)] == want


def test_a_geometric_ramp_doubles_in_equal_shares_of_its_steps():
    at = ramp_timeline({"from": 64, "to": 512, "steps": 12, "shape": "geometric"})
    assert [at(s) for s in range(1, 15)] == [64] * 3 + [128] * 4 + [256] * 4 + [512] * 3


@pytest.mark.parametrize("ramp, message", [
    ({"from": 128, "to": 64, "steps": 10}, r"levels\.ramp\.from: got 128, not below to"),
    ({"from": 64, "to": 128}, r"levels\.ramp\.steps: missing"),
    ({"from": 64, "to": 128, "steps": 10, "shape": "cubic"}, r"levels\.ramp\.shape: got 'cubic'"),
    ({"from": 64, "to": 128, "steps": 10, "degree": 2}, r"levels\.ramp\.degree: only used with"),
    ({"from": 2, "to": 100_000, "steps": 100_000}, r"levels\.ramp\.step_size: the ramp passes"),
    ({"from": 64, "to": 128, "steps": 10, "rope_theta": -1}, r"levels\.ramp\.rope_theta: got -1"),
])
def test_bad_ramps_are_named(ramp, message):
    with pytest.raises(ValueError, match=message):
        Curriculum.model_validate({"levels": {"ramp": ramp}})


@pytest.mark.e2e
def test_a_ramp_through_axolotl_never_feeds_past_its_length(axolotl_train):
    """... and a ramp's rope_theta is the RoPE of its every step: each step's rotary equals a
    model built anew at that base (tests/plugins/rope_probe.py), not the model's own 10000."""
    ramp = {"from": 16, "to": 128, "steps": 20, "step_size": 16, "rope_theta": 80_000.0}
    expected = [[1, {"rope_type": "default", "rope_theta": 80_000.0}]]
    run = axolotl_train(probe=True, curriculum={"levels": {"ramp": ramp}}, max_steps=24,
                        plugins=["axolotl_curriculum.CurriculumPlugin", "rope_probe.RopeProbe"],
                        env={"ROPE_EXPECTED": json.dumps(expected)})
    rope = json.loads((run.out / "rope_probe.rank0.json").read_text())
    assert [r["step"] for r in rope] == list(range(1, 25))
    assert all(r["inv_freq"] and r["config"]["rope_theta"] == 80_000.0 for r in rope), rope
    want = deepspeed_lengths(16, 128, 20, 16, upto=24)
    fed = fed_by_forward(run.out)[0]
    assert sorted(fed) == list(range(1, 25))
    for step, seen in fed.items():
        assert 0 < seen["longest"] <= want[step - 1], (step, seen["longest"], want[step - 1])
    # every row of the corpus is longer than 64 tokens: each length up to 64 shows in full
    assert all(fed[s]["longest"] == want[s - 1] for s in fed if want[s - 1] <= 64)
    assert [r["input_len"] for r in run.rank(0)] == want
