"""`rescore: true`: at each level switch the model as it is then re-scores the examples, the new
level admits by the new scores, no example is fed twice in a pass, and a resume replays it."""

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from axolotl_curriculum import Curriculum
from axolotl_curriculum.core.difficulty import admitted
from axolotl_curriculum.data.model_scores import _pad, model_scores
from axolotl_curriculum.run.run import CurriculumRun
from test_model_scores import instructions

BLOCK = {"difficulty": {"score": "loss", "rescore": True}, "levels": [
    {"input_len": 64, "max_steps": 3, "admit": 0.3}, {"input_len": 64, "max_steps": 3, "admit": 0.5},
    {"input_len": 64, "max_steps": 3, "admit": 0.8}, {"input_len": 64}]}
SHARES = [0.3, 0.5, 0.8, 1.0]
STEPS = 12


# sense_grad that advances at its first check with enough statistics
GATE = {"check_every": 2, "window": 3, "settle_steps": 0, "min_steps": 2, "max_grad_cv": 100.0,
        "max_loss_slope": 1.0, "max_spikes": 100}


def new_run(ds, model, tmp_path, block=BLOCK, steps=STEPS):
    run = CurriculumRun(block, tmp_path, pad_token_id=0)
    loader = run.train_loader(ds, lambda rows: rows, batch_size=2, model=model, max_steps=steps)
    return run, loader


def train(run, loader, model, first, on_step_end=lambda g: None, steps=STEPS):
    """Plain SGD steps from 1-based step `first`; returns {step: rows fed}."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    fed = {}
    for g, batch in zip(range(first, steps + 1), loader):
        fed[g] = [r["row"] for r in batch]
        inputs = _pad(batch, 0, "cpu")
        loss = model(**inputs).loss
        loss.backward()
        run.on_micro_batch(inputs, loss)
        opt.step()
        opt.zero_grad()
        run.on_step_end(g, torch.ones(()))
        on_step_end(g)
    return fed


def dataset(tiny_model):
    return instructions(tiny_model, n=60).add_column("row", list(range(60)))


def test_each_switch_admits_by_the_current_models_scores_and_feeds_each_example_once(tiny_model,
                                                                                      tmp_path):
    torch.manual_seed(0)
    ds = dataset(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    run, loader = new_run(ds, model, tmp_path)
    assert run.delay == 3  # no workers, no accumulation: the loader plans up to 3 steps ahead
    at_rescore, states = {}, {}

    def watch(g):
        if len(run.scoring.sets) > len(at_rescore) + 1:  # this step end re-scored
            at_rescore[g] = model_scores("loss", model, ds, run.rows)
        states[g] = run.state_dict(g)

    fed = train(run, loader, model, 1, watch)
    # re-scored at the step ends 3 steps before the switches to steps 4 and 7, on the model
    # then; not for the last level, which admits every example
    assert run.scoring.from_steps == [0, 3, 6] and sorted(at_rescore) == [1, 4]
    for version, g in enumerate(sorted(at_rescore), start=1):
        np.testing.assert_allclose(run.scoring.sets[version], at_rescore[g], rtol=1e-6)
    sets = run.scoring.sets
    assert not np.array_equal(admitted(sets[0], 0.5), admitted(sets[1], 0.5))  # the model moved
    for g, rows in fed.items():  # each step fed only what its level admits by its scores
        level = (g - 1) // 3
        assert admitted(sets[min(level, 2)], SHARES[level])[rows].all(), g
    every = [r for rows in fed.values() for r in rows]
    assert len(every) == len(set(every)) == 24  # fewer than one pass: none twice

    # a resume from step 6 (the second re-score taken, its level not begun) feeds the same rows
    # after it, though its model, trained already, would score the examples otherwise
    again, loader = new_run(ds, model, tmp_path / "resumed")
    again.load_state_dict(states[6], 6)
    assert [s.tolist() for s in again.scoring.sets] == [s.tolist() for s in sets[:3]]
    refed = train(again, loader, model, 7)
    assert refed == {g: fed[g] for g in range(7, STEPS + 1)}


def test_rescore_needs_a_model_score_and_is_accepted_with_one():
    assert Curriculum.model_validate(BLOCK).difficulty.rescore


def test_a_sense_grad_advance_re_scores_at_the_step_end_that_decides(tiny_model, tmp_path):
    block = {"difficulty": {"score": "loss", "rescore": True}, "sense_grad": GATE, "levels": [
        {"input_len": 64, "max_steps": 50, "admit": 0.3},
        {"input_len": 64, "max_steps": 50, "admit": 0.6}, {"input_len": 64}]}
    ds, model = dataset(tiny_model), AutoModelForCausalLM.from_pretrained(tiny_model)
    run, loader = new_run(ds, model, tmp_path, block, steps=14)
    fed = train(run, loader, model, 1, steps=14)
    run.log.flush()
    lines = [r for r in run.log.path.read_text().splitlines() if "rescore_level" in r]
    advances = [d.step for d in run.decisions.gate.decisions if d.action == "advance"]
    # step 4 decided level 1 from step 7 (the switch delay of 3) and re-scored then, not later;
    # the next advance opens the last level, which admits all: no re-score
    assert advances[:2] == [4, 10] and run.scoring.from_steps == [0, 6]
    assert len(lines) == 1 and '"step": 4' in lines[0] and '"rescore_from_step": 7' in lines[0]
    assert all(admitted(run.scoring.sets[1], 0.6)[fed[g]].all() for g in range(7, 13))
    every = [r for rows in fed.values() for r in rows]
    assert len(every) == len(set(every))


def test_a_re_score_pre_flights_the_shapes_it_opens(tiny_model, tmp_path):
    """Unpacked under the token budget, a level's micro-batch holds as many examples as its
    admitted rows' mean length allows; a re-score that admits others changes the shape. Here
    the scores first rank long rows easiest, then (re-scored) short ones: the next level feeds
    wider micro-batches of short rows, which no shape pre-flighted at the start covers. Every
    micro-batch fed (its rows x its longest row) fits a pre-flighted shape."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ds = Dataset.from_list([{"input_ids": ids, "labels": ids, "row": i} for i, ids in enumerate(
        rng.integers(3, 200, size=n).tolist() for n in rng.integers(4, 60, size=60))])
    lengths = np.asarray([len(ids) for ids in ds["input_ids"]], dtype=np.float64)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    block = {"difficulty": {"score": "loss", "rescore": True}, "budget": "tokens", "levels": [
        {"input_len": 64, "max_steps": 3, "admit": 0.3}, {"input_len": 64, "max_steps": 3, "admit": 0.35},
        {"input_len": 64}]}
    run = CurriculumRun(block, tmp_path, pad_token_id=0)
    designed = iter([-lengths, lengths])  # the model's scores, in turn: long rows, then short
    run.scoring.compute = lambda *args: next(designed)
    loader = run.train_loader(ds, lambda rows: rows, batch_size=2, model=model, max_steps=9)
    checked = []
    run.preflights.at = checked.extend
    run.preflight_new_shapes()  # as the trainer adapter does before step 1
    at_start = list(checked)
    fed = train(run, loader, model, 1, steps=9)
    assert run.scoring.from_steps == [0, 3]
    shapes = [(len(rows), int(lengths[rows].max())) for rows in fed.values()]
    covered = lambda shape, by: any(r >= shape[0] and w >= shape[1] for r, w, _ in by)  # noqa: E731
    assert all(covered(s, checked) for s in shapes), (shapes, checked)
    assert not all(covered(s, at_start) for s in shapes[3:6]), (shapes, at_start)
