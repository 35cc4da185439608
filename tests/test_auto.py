"""`levels: auto`: the ladder from the data, always a valid block, at least two levels when it can."""

import numpy as np
import pytest
import yaml

from axolotl_curriculum.core.auto import as_yaml, choose_levels, resolve
from axolotl_curriculum.core.config import Curriculum


def lognormal(n, median, sigma, seq, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(median), sigma, n), 2, seq).astype(np.int64)


def test_doubling_ladder_to_sequence_len():
    levels = choose_levels(lognormal(5000, 300, 1.0, 2048), 2048, 1000)
    assert [lv["input_len"] for lv in levels] == [64, 256, 1024, 2048]  # 4 levels, log-spread
    assert [lv.get("max_steps") for lv in levels] == [100, 100, 100, None]  # 30% of the steps


def test_rungs_stop_where_the_data_does():
    lengths = np.random.default_rng(0).integers(40, 300, 2000)
    levels = choose_levels(lengths, 4096, 100, knobs={"max_levels": 8})
    assert [lv["input_len"] for lv in levels] == [64, 128, 256, 4096]


def test_short_runs_still_stage():
    lengths = np.arange(40, 129)
    assert choose_levels(lengths, 128, 30) == [{"input_len": 64, "max_steps": 9}, {"input_len": 128}]
    assert choose_levels(lengths, 128, 2) == [{"input_len": 64, "max_steps": 1}, {"input_len": 128}]
    assert choose_levels(lengths, 128, 1) == [{"input_len": 128}]


def test_nothing_to_stage():
    assert choose_levels(np.full(50, 60), 2048, 500) == [{"input_len": 2048}]
    assert choose_levels(np.full(50, 60), 48, 500) == [{"input_len": 48}]


def test_sense_grad_caps_and_min_steps():
    lengths = lognormal(2000, 300, 1.0, 2048)
    long = choose_levels(lengths, 2048, 1000, sense_grad=True)
    assert [lv.get("max_steps") for lv in long] == [200, 200, 200, None]
    assert all("min_steps" not in lv for lv in long)  # sense_grad's default 20 fits
    short = choose_levels(lengths, 2048, 30, sense_grad=True)
    assert all(lv["min_steps"] <= lv["max_steps"] for lv in short[:-1])
    Curriculum.model_validate({"levels": short, "sense_grad": True})


def test_filter_starts_where_a_tenth_of_the_rows_fit():
    lengths = np.concatenate([np.full(5, 50), np.full(100, 200), np.full(100, 1000)])
    levels = choose_levels(lengths, 2048, 100, truncation="filter")
    assert levels[0]["input_len"] == 256  # 64 and 128 admit 2% of the rows
    assert choose_levels(lengths, 2048, 100)[0]["input_len"] == 64


@pytest.mark.parametrize("seed", range(400))
def test_property_random_data_and_runs(seed):
    rng = np.random.default_rng(seed)
    seq = int(rng.choice([32, 100, 128, 512, 2048, 8192]))
    n = int(rng.integers(1, 3000))
    lengths = np.clip(rng.lognormal(np.log(rng.uniform(3, seq)), rng.uniform(0.1, 2), n), 2, seq)
    lengths = lengths.astype(np.int64)
    steps = int(rng.integers(2, 5000))
    sense = bool(rng.integers(2))
    mode = str(rng.choice(["head", "segment", "filter"]))
    knobs = {"min_input_len": int(rng.choice([8, 16, 64, 128])),
             "max_levels": int(rng.integers(2, 7)), "warmup_share": float(rng.uniform(0.05, 0.9))}
    levels = choose_levels(lengths, seq, steps, sense_grad=sense, knobs=knobs, truncation=mode)
    block = Curriculum.model_validate({"levels": levels, "sense_grad": sense, "truncation": mode})
    block.check_sequence_len(seq)
    assert levels[-1] == {"input_len": seq}
    assert len(levels) <= knobs["max_levels"]
    assert sum(lv["max_steps"] for lv in levels[:-1]) < steps
    first = levels[0]["input_len"]
    admitted = (lengths <= first).mean() if len(levels) > 1 else 1.0
    if mode != "filter" and (lengths > knobs["min_input_len"]).any() and knobs["min_input_len"] < seq:
        assert len(levels) >= 2
    if mode == "filter" and len(levels) > 1:
        assert admitted >= 0.1


def test_block_accepts_auto_with_knobs():
    c = Curriculum.model_validate({"levels": "auto", "auto": {"max_levels": 3}, "sense_grad": True})
    assert c.is_auto and c.auto.max_levels == 3
    c.check_sequence_len(16)  # auto stays within sequence_len by construction
    with pytest.raises(ValueError, match="levels: auto is chosen once the data"):
        c.input_lens


@pytest.mark.parametrize("block, message", [
    ({"levels": "auto", "auto": {"max_levels": 1}}, "curriculum.auto.max_levels: got 1; use an integer >= 2"),
    ({"levels": "auto", "auto": {"min_input_len": 1}}, "curriculum.auto.min_input_len: got 1"),
    ({"levels": "auto", "auto": {"warmup_share": 1.5}}, "curriculum.auto.warmup_share: got 1.5; use a number > 0.0 and <= 0.9"),
    ({"levels": "auto", "auto": {"max_level": 3}}, "curriculum.auto: unknown key 'max_level'; did you mean 'max_levels'?"),
    ({"levels": "auto", "auto": 3}, "curriculum.auto: got 3; use a mapping"),
    ({"levels": [{"input_len": 8}], "auto": {"max_levels": 3}}, "curriculum.auto: only used with `levels: auto`"),
    ({"levels": "automatic"}, "curriculum.levels: give a non-empty list"),
])
def test_auto_errors_name_the_key(block, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        Curriculum.model_validate(block)


def test_resolve_keeps_the_rest_of_the_block_and_pastes_back():
    c = Curriculum.model_validate({"levels": "auto", "truncation": "segment",
                                   "sense_grad": {"window": 10}, "auto": {"min_input_len": 32}})
    r = resolve(c, np.arange(10, 500), 512, 200)
    assert not r.is_auto and r.auto is None
    assert r.input_lens[0] == 32 and r.input_lens[-1] == 512
    assert r.truncation == "segment" and r.sense_grad.window == 10
    pasted = yaml.safe_load(as_yaml(r))["curriculum"]
    assert Curriculum.model_validate(pasted) == r
    plain = Curriculum.model_validate({"levels": [{"input_len": 8}]})
    assert resolve(plain, np.arange(10, 500), 512, 200) is plain
