"""The gate's statistics and decisions on given series (the e2e tests drive it with a model)."""

import json
import math

from axolotl_curriculum import Curriculum
from axolotl_curriculum.core.schedule import Timeline
from axolotl_curriculum.core.sense_grad import Gate, SpikeDetector


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


def decisions_after(gate, start, grads, losses, every=2):
    """Feed steps `start`.. and decide every `every` steps: the decisions, as a checkpointed run
    would log them (strict JSON: NaN statistics compare as null)."""
    out = []
    for k, (g, loss) in enumerate(zip(grads, losses)):
        gate.observe(start + k, g, loss)
        step = start + k + 1
        if step % every == 0:
            d = gate.decide(step)
            out.append((d.step, d.level, d.action, d.reason,
                        json.loads(json.dumps(d.stats).replace("NaN", "null"))))
    return out


def test_state_round_trip():
    """A gate checkpointed mid-run and restored from its JSON (with the timeline, as a checkpoint
    stores both) takes every later decision the uninterrupted gate takes.

    The state matters here: at the checkpoint the gate has advanced to level 1, backed off once
    (a second back-off from level 1 is not allowed) and just re-entered level 1 with a spike (in
    the settle steps the next check reads); the running means carry two earlier spikes, so a
    grad norm of 3.0 after the resume is no spike against them (it would be against fresh ones).
    """
    def gate():
        cur = Curriculum.model_validate({
            "levels": [{"input_len": 8, "max_steps": 100}, {"input_len": 16, "max_steps": 100},
                       {"input_len": 32}],
            "sense_grad": {"window": 6, "settle_steps": 2, "min_steps": 2, "check_every": 2,
                           "backoff": True, "backoff_spikes": 1, "backoff_steps": 4}})
        timeline = Timeline(cur.input_lens, [lv.max_steps for lv in cur.levels])
        return Gate(cur, timeline, delay=3), timeline

    calm = lambda n: [1.0 + 0.01 * (-1) ** k for k in range(n)]  # noqa: E731
    before, after = calm(8) + [6.0, 1.0] + calm(6) + [5.0], [1.0, 3.0] + calm(15)
    loss = [2.0 - 0.005 * k for k in range(len(before) + len(after))]
    n = len(before)
    whole, timeline = gate()
    first = decisions_after(whole, 0, before, loss[:n])
    assert [d[2] for d in first][2:5] == ["advance", "pending", "backoff"]
    saved = json.loads(json.dumps(whole.state_dict()))  # as the checkpoint stores them
    saved_timeline = json.loads(json.dumps(timeline.state_dict()))

    resumed, resumed_timeline = gate()
    resumed_timeline.load_state_dict(saved_timeline)
    resumed.load_state_dict(saved)
    want = decisions_after(whole, n, after, loss[n:])
    got = decisions_after(resumed, n, after, loss[n:])
    assert got == want
    levels = lambda tl: [tl.level_at(s) for s in range(80)]  # noqa: E731
    assert levels(resumed_timeline) == levels(timeline)
    # the spike before the checkpoint is held, not backed off again; level 2 follows
    assert [d[2] for d in want][:6] == ["hold"] * 4 + ["advance", "pending"]
    assert want[2][4]["spikes"] == 0 and want[2][4]["window"] == 4

    # the decisions depend on the state restored: without it a gate decides otherwise
    bare, bare_timeline = gate()
    bare_timeline.load_state_dict(saved_timeline)
    assert decisions_after(bare, n, after, loss[n:]) != want


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
