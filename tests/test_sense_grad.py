"""The gate's statistics and decisions on given series (the e2e tests drive it with a model)."""

import math

from axolotl_curriculum import Curriculum
from axolotl_curriculum.schedule import Timeline
from axolotl_curriculum.sense_grad import Gate, SpikeDetector


def test_spike_detector():
    detect = SpikeDetector(0.9, 2.0, 1.5)
    assert [detect(g, 1.0) for g in (1.0, 1.1, 0.9, 3.0, 1.0)] == [False, False, False, True, False]
    assert detect(math.nan, 1.0) and detect(1.0, math.inf)
    assert detect(1.0, 2.0)  # the loss jumped


def make_gate(**sense):
    cur = Curriculum.model_validate({"levels": [{"input_len": 8, "max_steps": 100},
                                                {"input_len": 16}],
                                     "sense_grad": {"window": 6, "settle_steps": 2,
                                                    "min_steps": 6, **sense}})
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    return Gate(cur, timeline, delay=3), timeline


def feed(gate, start, grads, losses=None):
    for k, g in enumerate(grads):
        gate.observe(start + k, g, (losses or [2.0] * len(grads))[k])


def test_holds_while_volatile_and_advances_when_calm():
    gate, timeline = make_gate()
    feed(gate, 0, [1.0, 3.0, 0.5, 2.5, 0.4, 3.0, 0.5, 2.0])
    decision = gate.decide(8)
    assert decision.action == "hold" and "grad_cv" in decision.reason
    feed(gate, 8, [1.0, 1.02, 0.98, 1.01, 0.99, 1.0])
    decision = gate.decide(14)
    assert decision.action == "advance", decision
    assert timeline.level_at(13 + 3) == 1 and timeline.level_at(13 + 2) == 0  # after the delay
    assert gate.decide(15).action == "pending"


def test_min_steps_and_non_finite_values_hold():
    gate, _ = make_gate()
    feed(gate, 0, [1.0] * 4)
    assert gate.decide(4).reason.startswith("min_steps")
    feed(gate, 4, [1.0, math.nan, 1.0, 1.0])
    decision = gate.decide(8)
    assert decision.action == "hold" and "spikes" in decision.reason


def test_rising_loss_holds():
    gate, _ = make_gate()
    feed(gate, 0, [1.0] * 8, [1.0 + 0.05 * k for k in range(8)])
    assert "loss_slope" in gate.decide(8).reason


def test_backoff_after_spikes_right_after_a_switch():
    gate, timeline = make_gate(backoff=True, backoff_spikes=2, backoff_steps=4)
    timeline.switch(0, 1)  # pretend level 1 began at step 0 after a calm level 0
    gate.spikes.ema_grad, gate.spikes.ema_loss = 1.0, 2.0
    feed(gate, 0, [5.0, 9.0, 1.0, 1.0])
    decision = gate.decide(4)
    assert decision.action == "backoff"
    assert [timeline.level_at(s) for s in (5, 6, 9, 10)] == [1, 0, 0, 1]  # back for 4 steps


def test_state_round_trip():
    gate, timeline = make_gate()
    feed(gate, 0, [1.0, 1.5, 0.7])
    other, _ = make_gate()
    other.load(gate.state_dict())
    assert other.window_stats() == gate.window_stats()
    assert other.spikes.ema_grad == gate.spikes.ema_grad


def three_level_gate(max_steps_1=100, **sense):
    cur = Curriculum.model_validate({
        "levels": [{"input_len": 8, "max_steps": 50}, {"input_len": 16, "max_steps": max_steps_1},
                   {"input_len": 32}],
        "sense_grad": {"window": 6, "settle_steps": 2, "min_steps": 2, "backoff": True,
                       "backoff_spikes": 2, "backoff_steps": 4, **sense}})
    timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
    return Gate(cur, timeline, delay=3), timeline


def test_no_backoff_into_a_level_switched_off():
    """A filter level admitting nothing has max_steps 0: a back-off must not feed it."""
    gate, timeline = three_level_gate()
    timeline.max_steps[0] = 0
    gate.spikes.ema_grad, gate.spikes.ema_loss = 1.0, 2.0
    feed(gate, 0, [5.0, 9.0, 1.0, 1.0])
    assert timeline.level_at(0) == 1
    decision = gate.decide(4)
    assert decision.action != "backoff"
    assert all(timeline.level_at(s) != 0 for s in range(200))


def test_no_backoff_across_a_pending_cap_switch():
    """Level 1's cap ends it within the switch delay: the cap wins, levels never go 2 then 0."""
    gate, timeline = three_level_gate(max_steps_1=5)
    timeline.switch(0, 1)
    gate.spikes.ema_grad, gate.spikes.ema_loss = 1.0, 2.0
    feed(gate, 0, [5.0, 9.0, 1.0, 1.0])
    decision = gate.decide(4)
    assert decision.action == "pending"
    levels = [timeline.level_at(s) for s in range(12)]
    assert levels == sorted(levels)  # never down after up
