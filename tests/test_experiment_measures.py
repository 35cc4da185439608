"""The experiment's statistics (benchmarks/study/measures.py) against independent references."""

import math
import sys
from pathlib import Path

import numpy as np
from hypothesis import given, settings, strategies as st
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from study.measures import compute, loss_at, paired_interval, ratio_interval, to_target  # noqa: E402

from axolotl_curriculum.core.flops import train_flops  # noqa: E402

positive = st.floats(0.5, 50.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(positive, min_size=2, max_size=6), st.lists(positive, min_size=2, max_size=6))
def test_ratio_interval_is_welchs_interval_on_the_logs(base, arm):
    r, lo, hi = ratio_interval(base, arm)
    res = stats.ttest_ind(np.log(base), np.log(arm), equal_var=False)
    assert math.isclose(r, math.exp(np.mean(np.log(base)) - np.mean(np.log(arm))), rel_tol=1e-9)
    if np.std(np.log(base)) + np.std(np.log(arm)) > 1e-9:
        ci = res.confidence_interval(0.95)
        assert math.isclose(lo, math.exp(ci.low), rel_tol=1e-6)
        assert math.isclose(hi, math.exp(ci.high), rel_tol=1e-6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(positive, positive), min_size=2, max_size=6))
def test_paired_interval_is_the_t_interval_of_the_log_ratios(pairs):
    base, arm = [b for b, _ in pairs], [a for _, a in pairs]
    logs = np.log(base) - np.log(arm)
    r, lo, hi = paired_interval(base + [math.nan], arm + [1.0])  # an unreached pair is left out
    assert math.isclose(r, math.exp(logs.mean()), rel_tol=1e-9)
    if logs.std() > 1e-9:
        ci = stats.ttest_1samp(logs, 0.0).confidence_interval(0.95)
        assert math.isclose(lo, math.exp(ci.low), rel_tol=1e-6)
        assert math.isclose(hi, math.exp(ci.high), rel_tol=1e-6)


def test_ratio_interval_needs_two_seeds_a_side():
    r, lo, hi = ratio_interval([4.0], [2.0, 2.2])
    assert math.isclose(r, 4.0 / math.sqrt(2.0 * 2.2)) and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in ratio_interval([math.nan], [1.0]))


@settings(max_examples=60, deadline=None)
@given(st.floats(0.1, 10.0), st.floats(0.01, 0.5), st.floats(0.05, 0.95))
def test_to_target_finds_the_crossing_of_a_line(start, slope, where):
    """Eval loss falling linearly in compute: the crossing is where the line meets the target."""
    cum = np.cumsum(np.full(100, 7.0))  # compute after each step
    evals = [(step, start - slope * cum[step - 1] / 100) for step in range(10, 101, 10)]
    lo, hi = evals[0][1], evals[-1][1]
    target = hi + where * (lo - hi)
    expected = (start - target) * 100 / slope
    assert math.isclose(to_target(evals, cum, target), expected, rel_tol=1e-9)
    assert math.isnan(to_target(evals, cum, hi - 1.0))  # never reached
    assert to_target(evals, cum, lo + 1.0) == cum[9]  # reached at the first eval
    # an eval before training (step 0) spent no compute: a crossing after it interpolates from 0
    before = [(0, lo + 2.0)] + evals
    assert math.isclose(to_target(before, cum, lo + 1.0), cum[9] / 2)
    # loss_at is its inverse on the line, between the first and the last eval
    spent = cum[9] + where * (cum[-1] - cum[9])
    assert math.isclose(loss_at(evals, cum, spent), start - slope * spent / 100, rel_tol=1e-9)
    assert math.isclose(to_target(evals, cum, loss_at(evals, cum, spent)), spent, rel_tol=1e-9)
    assert math.isnan(loss_at(evals, cum, cum[-1] + 1.0))  # beyond the last eval


def test_compute_counts_attention_per_example():
    """A step's FLOPs from its logged tokens and len_sq: 6 x (the weights of the real model's
    linear layers) per token, plus attention's 12 x layers x heads x head_dim per token pair
    of each example; and the same as train_flops over the step's examples."""
    from torch import nn
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    weights = sum(m.weight.numel() for m in LlamaForCausalLM(cfg).modules()
                  if isinstance(m, nn.Linear))
    steps = [[30, 50, 20], [100], [7, 7, 7, 7]]
    records = [{"tokens": sum(s), "len_sq": sum(n * n for n in s), "max_example_len": max(s)}
               for s in steps]
    got = compute(records, cfg)
    want = np.cumsum([6 * weights * sum(s) + 12 * 2 * 4 * 16 * sum(n * n for n in s) for s in steps])
    assert np.allclose(got["flops"], want)
    assert np.allclose(np.diff(got["flops"], prepend=0), [train_flops(cfg, np.array(s)) for s in steps])
    assert list(got["tokens"]) == list(np.cumsum([sum(s) for s in steps]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=5))
def test_largest_stable_lr_stops_at_the_first_divergence(fell):
    from study.report import sweep_cells
    from study.runs import Knobs, Run, Setting

    setting = Setting("t", Path("."), {}, 64, 10, 2, 1e-3, 5)
    tuned = 2.0
    mults = [2.0 ** (2 * i + 3) for i in range(len(fell))]  # x8, x32, x128, ...
    runs = [Run(setting, "baseline", {}, 0, Knobs(tuned * m, 0.0),
                records=[{"step": 1, "input_len": 64, "grad_norm": 1.0,
                          "loss": math.nan if f else 1.0}], evals=[(0, 2.0), (5, 1.5)])
            for m, f in zip(mults, fell)]
    expected = 1.0  # the tuned runs
    for m, f in zip(mults, fell):
        if f:
            break
        expected = m
    cells = sweep_cells(runs, tuned, 64)[("baseline", "no warmup")]
    assert cells["stable"] == expected
    assert [c["diverged"] for c in cells["cells"].values()] == [int(f) for f in fell]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(1.0, 8.0), min_size=2, max_size=10))
def test_diverged_is_a_rise_of_half_a_nat_over_an_earlier_eval(values):
    from study.measures import diverged

    evals = list(enumerate(values))
    records = [{"loss": 1.0}]
    rise = any(values[j] - values[i] > 0.5 for i in range(len(values))
               for j in range(i + 1, len(values)))
    assert diverged(records, evals) == rise
    assert diverged([{"loss": math.nan}], evals)  # a non-finite loss always counts


def test_wall_time_is_read_from_the_trainers_event_clock(tmp_path):
    """read_walls: seconds since the eval before step 1, at each logged step, from the
    events' own wall clock (written here by torch's SummaryWriter, as the trainer does); a
    step's train event wins over its eval (the eval's time is not the step's)."""
    from torch.utils.tensorboard import SummaryWriter

    from study.runs import read_walls

    writer = SummaryWriter(str(tmp_path / "runs" / "x"))
    start = 1_000_000.0
    writer.add_scalar("eval/loss", 3.0, 0, walltime=start)
    for step, t in ((5, 20.0), (10, 41.0)):
        writer.add_scalar("train/loss", 2.0, step, walltime=start + t)
        writer.add_scalar("eval/loss", 2.5, step, walltime=start + t + 7.0)
    writer.close()
    assert read_walls(tmp_path) == [(5, 20.0), (10, 41.0)]
    assert read_walls(tmp_path / "none") == []


def sweep_run(setting, arm, mult, blows, warmup=0.0):
    """A made-up sweep run of 10 steps: a NaN loss at the last step where it `blows`."""
    from study.arms import arms
    from study.runs import Knobs, Run

    loss = [2.0] * 9 + [float("nan") if blows else 1.5]
    records = [{"step": i + 1, "loss": x, "grad_norm": 1.0, "input_len": 256}
               for i, x in enumerate(loss)]
    return Run(setting, arm, arms(256, 10)[arm], 0, Knobs(mult, warmup), ok=True,
               records=records, evals=[(5, 2.0), (10, 1.9)])


def test_the_ratio_section_finds_a_ratio_that_doubles_the_stable_lr(tiny_model, tmp_path):
    """Issue 26's table from made-up sweep runs: the baseline diverges at x4 (a NaN loss), the
    staircase from seq/16 does not (largest stable LR x4 against x2: 2x), the staircase from
    seq/4 diverges with the baseline; the arms' ratios come from their own first lengths."""
    from study.report import Setting as Measured, ratio_section
    from study.runs import Knobs, Setting

    setting = Setting("scratch", tiny_model, {}, 256, 10, 2, 1e-3, 5)
    sweep = [sweep_run(setting, "baseline", 2.0, False), sweep_run(setting, "baseline", 4.0, True),
             sweep_run(setting, "staircase", 2.0, False),
             sweep_run(setting, "staircase", 4.0, True),
             sweep_run(setting, "staircase_r16", 2.0, False),
             sweep_run(setting, "staircase_r16", 4.0, False)]
    st = Measured({"setting": setting, "equal": Knobs(), "sweep": sweep, "main": []})
    figures = []
    lines = ratio_section(st, tmp_path, figures)
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| no warmup")}
    assert " 16x | x4 |" in rows["staircase_r16"] and rows["staircase_r16"].endswith("| yes |")
    assert " 4x | x2 |" in rows["staircase"] and rows["staircase"].endswith("| - |")
    assert " 1x | x2 |" in rows["baseline"]
    assert "- no warmup: 2x at staircase_r16 (16x) (the baseline's largest stable LR x2)" in lines
    assert (tmp_path / figures[0]).is_file()


def test_each_condition_sweeps_its_own_rates_and_is_judged_at_its_own_blow_up(tiny_model,
                                                                                tmp_path):
    """The fine-tuning sweep's rates differ by condition (x8, x16 without warmup; x32, x64
    with): each condition's rows hold only its own rates and are judged at its own baseline's
    first divergence."""
    from experiment import sweep_multiples
    from study.report import Setting as Measured, ratio_section
    from study.runs import Knobs, Setting

    both = sweep_multiples({"no_warmup": (8.0, 16.0), "warmup": (32.0, 64.0)}, 0.2)
    assert both == [(0.0, (8.0, 16.0)), (0.2, (32.0, 64.0))]
    assert sweep_multiples((64.0, 128.0), 0.2) == [(0.0, (64.0, 128.0)), (0.2, (64.0, 128.0))]
    setting = Setting("finetune", tiny_model, {}, 256, 10, 2, 1e-3, 5)
    blows = {("baseline", 16.0), ("staircase_r16", 16.0), ("baseline", 64.0),
             ("staircase", 16.0), ("staircase", 64.0)}  # (the section needs two ratios)
    sweep = [sweep_run(setting, arm, m, (arm, m) in blows, wu) for wu, mults in both
             for m in mults for arm in ("baseline", "staircase", "staircase_r16")]
    lines = ratio_section(Measured({"setting": setting, "equal": Knobs(), "sweep": sweep,
                                    "main": []}), tmp_path, [])
    rows = {(line.split(" | ")[0], line.split(" | ")[1]): line for line in lines
            if line.startswith("| ")}
    # without warmup both blew up at x16; with it the baseline at x64 and staircase_r16 not
    assert " 16x | x8 |" in rows[("| no warmup", "staircase_r16")]
    assert rows[("| no warmup", "staircase_r16")].endswith("| 1/1 | - |")
    assert " 1x | x32 |" in rows[("| warmup 20%", "baseline")]
    assert " 16x | x64 |" in rows[("| warmup 20%", "staircase_r16")]
    assert rows[("| warmup 20%", "staircase_r16")].endswith("| 0/1 | yes |")
    assert "- no warmup: no ratio raised the largest stable LR or cut spikes 2x" \
        " (the baseline's largest stable LR x8)" in lines


def test_a_baseline_that_diverged_at_the_lowest_rate_swept_is_below_it_not_x1():
    """The sweep starts at x128: a baseline that diverged there is only known to be stable
    below x128, so an arm stable at x128 is not 2x it, one stable at x256 is."""
    from study.report import stable_text, twice_as_stable

    cells = {128.0: {}, 256.0: {}}
    base = {"stable": 1.0, "cells": cells}
    assert stable_text(base) == "< x128"
    assert not twice_as_stable(base, {"stable": 128.0, "cells": cells})
    assert twice_as_stable(base, {"stable": 256.0, "cells": cells})
    assert stable_text({"stable": 128.0, "cells": cells}) == "x128"
    assert not twice_as_stable({"stable": 128.0, "cells": cells}, {"stable": 128.0, "cells": cells})


def test_thinned_held_out_rows_keep_each_kinds_share_and_the_base_models_data(tmp_path):
    """The fine-tuning sweep evaluates on 48 of the 160 held-out rows: evenly spaced, so the
    file's 120 docstrings then 40 recall rows stay 3:1; the data the base model was
    pretrained on (its cache key's files) is untouched."""
    import json

    from study.data import digest, thinned, write_jsonl

    rows = [{"kind": "doc", "i": i} for i in range(120)] + [{"kind": "recall", "i": i}
                                                             for i in range(40)]
    data = {"pretrain": write_jsonl(tmp_path / "pretrain.jsonl", [{"text": "a b"}]),
            "train": write_jsonl(tmp_path / "train.jsonl", [{"text": "c d"}]),
            "test": write_jsonl(tmp_path / "test.jsonl", rows), "describe": "rows"}
    data["hash"] = digest(data["pretrain"], data["train"], data["test"])
    thin = thinned(data, 48)
    picked = [json.loads(line) for line in thin["test"].read_text().splitlines()]
    assert len(picked) == 48 and len({(r["kind"], r["i"]) for r in picked}) == 48
    assert sum(r["kind"] == "recall" for r in picked) == 12
    assert (thin["pretrain"], thin["train"]) == (data["pretrain"], data["train"])
    assert thin["hash"] != data["hash"] and len(rows) == len(data["test"].read_text().splitlines())
