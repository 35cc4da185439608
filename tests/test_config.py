"""The `curriculum:` contract: valid blocks load, wrong ones fail at config time naming the key."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from axolotl_curriculum import Curriculum

GOOD = {"levels": [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "max_steps": 5},
                   {"input_len": 128}]}

BAD = [
    ({"levels": []}, "curriculum.levels: give a non-empty list"),
    ({}, "curriculum.levels: give a non-empty list"),
    ({"levles": [{"input_len": 8}]}, "unknown key 'levles'; did you mean 'levels'?"),
    ({"levels": [{"max_steps": 3}, {"input_len": 8}]}, "curriculum.levels[0].input_len: missing"),
    ({"levels": [{"input_length": 8}]}, "curriculum.levels[0]: unknown key 'input_length'; did you mean 'input_len'?"),
    ({"levels": [{"input_len": 0}]}, "curriculum.levels[0].input_len: got 0; use an integer >= 2"),
    ({"levels": [{"input_len": -5}]}, "curriculum.levels[0].input_len: got -5"),
    ({"levels": [{"input_len": 12.5}]}, "curriculum.levels[0].input_len: got 12.5"),
    ({"levels": [{"input_len": "64"}]}, "curriculum.levels[0].input_len: got '64'"),
    ({"levels": [{"input_len": True}]}, "curriculum.levels[0].input_len: got True"),
    ({"levels": [{"input_len": 64, "max_steps": 4}, {"input_len": 32}]},
     "curriculum.levels[1].input_len: got 32; levels must grow, use a value above 64"),
    ({"levels": [{"input_len": 64, "max_steps": 4}, {"input_len": 64}]}, "levels must grow"),
    ({"levels": [{"input_len": 16, "max_steps": 0}, {"input_len": 32}]},
     "curriculum.levels[0].max_steps: got 0; use an integer >= 1"),
    ({"levels": [{"input_len": 16, "max_steps": -1}, {"input_len": 32}]}, "max_steps: got -1"),
    ({"levels": [{"input_len": 16}, {"input_len": 32}]},
     "curriculum.levels[0].max_steps: missing; every level but the last needs max_steps"),
    ([{"input_len": 16}], "curriculum: expected a mapping"),
    ({"levels": [{"input_len": 16, "max_steps": 5, "min_steps": 2}, {"input_len": 32}]},
     "curriculum.levels[0].min_steps: only means something with sense_grad"),
    ({"levels": [{"input_len": 16, "max_steps": 5}, {"input_len": 32}], "sense_grad": True},
     "curriculum.levels[0].min_steps: 20 is above max_steps 5"),
    ({"levels": [{"input_len": 16, "max_steps": 50, "min_steps": 60}, {"input_len": 32}],
      "sense_grad": {}}, "curriculum.levels[0].min_steps: 60 is above max_steps 50"),
    ({"levels": [{"input_len": 16}], "sense_grad": {"max_grad_cv": 0}},
     "curriculum.sense_grad.max_grad_cv: got 0; use a number > 0.0"),
    ({"levels": [{"input_len": 16}], "sense_grad": {"grad_spike_factor": 0.5}},
     "curriculum.sense_grad.grad_spike_factor: got 0.5; use a number > 1.0"),
    ({"levels": [{"input_len": 16}], "sense_grad": {"ema_beta": 1.0}}, "sense_grad.ema_beta: got 1.0"),
    ({"levels": [{"input_len": 16}], "sense_grad": {"window": 2}},
     "curriculum.sense_grad.window: got 2; use an integer >= 3"),
    ({"levels": [{"input_len": 16}], "sense_grad": {"check_evry": 2}},
     "curriculum.sense_grad: unknown key 'check_evry'; did you mean 'check_every'?"),
    ({"levels": [{"input_len": 16}], "sense_grad": {"max_loss_slope": float("nan")}},
     "sense_grad.max_loss_slope: got nan"),
    ({"levels": [{"input_len": 16}], "sense_grad": "yes"}, "curriculum.sense_grad: got 'yes'"),
    ({"levels": [{"input_len": 16}], "restart_on_resume": "no"}, "curriculum.restart_on_resume"),
    ({"levels": [{"input_len": 16}], "truncation": "sentence"},
     "curriculum.truncation: got 'sentence'; use one of head, segment, filter"),
    ({"levels": [{"input_len": 16, "truncation": "tail"}]}, "curriculum.levels[0].truncation: got 'tail'"),
    ({"levels": [{"input_len": 16}], "budget": "flops"}, "curriculum.budget: got 'flops'; use one of tokens, examples"),
    ({"levels": [{"input_len": 16}], "prompt_cut": "right"}, "curriculum.prompt_cut: got 'right'"),
    ({"levels": [{"input_len": 16}], "segment_window": 0}, "curriculum.segment_window: got 0"),
    ({"levels": [{"input_len": 16}], "segment_window": 1.5}, "curriculum.segment_window: got 1.5"),
    ({"levels": [{"input_len": 16}], "keep_prompt_head": -1}, "curriculum.keep_prompt_head: got -1"),
    ({"levels": [{"input_len": 16}], "boundaries": "."}, "curriculum.boundaries: got '.'"),
    ({"levels": [{"input_len": 16}], "boundaries": []}, "curriculum.boundaries: got []"),
    ({"levels": [{"input_len": 16}], "truncaton": "head"}, "did you mean 'truncation'?"),
    ({**GOOD, "short_share": 1}, "curriculum.short_share: got 1; use a share below 1"),
    ({**GOOD, "short_share": -0.1}, "curriculum.short_share: got -0.1; use a number >= 0.0"),
    ({"levels": "auto", "short_share": 0.25}, "curriculum.short_share: levels: auto chooses"),
    ({"levels": [{"input_len": 32, "max_steps": 10, "short_share": 0.2}, {"input_len": 64}]},
     "curriculum.levels[0].short_share: the first level is the short data"),
    ({"levels": [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "short_share": "a"}]},
     "curriculum.levels[1].short_share: got 'a'"),
]


@pytest.mark.parametrize("value", [True, {}])
def test_sense_grad_shorthand_gives_defaults(value):
    cur = Curriculum.model_validate({"levels": [{"input_len": 16, "max_steps": 40},
                                                {"input_len": 32}], "sense_grad": value})
    assert cur.sense_grad is not None and cur.sense_grad.check_every == 10
    assert cur.min_steps(0) == 20


def test_sense_grad_off():
    cur = Curriculum.model_validate({"levels": [{"input_len": 16}], "sense_grad": False})
    assert cur.sense_grad is None


def test_good_block_round_trips():
    cur = Curriculum.model_validate(GOOD)
    assert cur.input_lens == [32, 64, 128]
    assert [lv.max_steps for lv in cur.levels] == [10, 5, None]
    assert Curriculum.model_validate(cur.model_dump(exclude_none=True)) == cur


@pytest.mark.parametrize("block,message", BAD)
def test_bad_block_names_key_and_fix(block, message):
    with pytest.raises(ValidationError) as err:
        Curriculum.model_validate(block)
    assert message in str(err.value)


def test_input_len_above_sequence_len():
    cur = Curriculum.model_validate(GOOD)
    cur.check_sequence_len(128)
    with pytest.raises(ValueError, match=r"levels\[2\].input_len: got 128, above sequence_len 100"):
        cur.check_sequence_len(100)


@pytest.mark.parametrize("block, needs", [
    (GOOD, False),
    ({**GOOD, "truncation": "segment"}, True),
    ({"levels": [{"input_len": 32, "max_steps": 10, "truncation": "segment"}, {"input_len": 64}]},
     True),
    ({"levels": [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "truncation": "split"}],
      "truncation": "segment"}, True),  # the first level still cuts at segments
    ({"levels": [{"input_len": 32, "max_steps": 10, "truncation": "head"},
                 {"input_len": 64, "truncation": "head"}], "truncation": "segment"}, False),
    ({"levels": "auto"}, False),
    ({"levels": "auto", "truncation": "segment"}, True),
    ({**GOOD, "difficulty": "segments"}, True),
    ({**GOOD, "difficulty": "rarity"}, False),
])
def test_needs_boundaries(block, needs):
    assert Curriculum.model_validate(block).needs_boundaries is needs


def test_level_min_steps_null_is_the_gates_default():
    def block(max_steps):
        return {"levels": [{"input_len": 16, "max_steps": max_steps, "min_steps": None},
                           {"input_len": 32}], "sense_grad": True}

    assert Curriculum.model_validate(block(40)).min_steps(0) == 20
    with pytest.raises(ValidationError, match=r"levels\[0\].min_steps: 20 is above max_steps 5"):
        Curriculum.model_validate(block(5))


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("overrides, message", [
    ({"max_grad_norm": 0, "curriculum": {"levels": [{"input_len": 128}], "sense_grad": True}},
     "curriculum.sense_grad reads the gradient norm"),
    ({"deepspeed": str(ROOT / "example_configs/deepspeed/zero2.json"), "sample_packing": False,
      "curriculum": {"levels": [{"input_len": 128}], "budget": "tokens"}},
     "curriculum.budget: tokens without sample packing changes the micro-batch size"),
])
def test_axolotl_validation_rejects_what_the_engine_cannot_do(tiny_model, overrides, message):
    from axolotl.utils.config import prepare_plugins, validate_config
    from axolotl.utils.dict import DictDefault

    from axolotl_curriculum.testing import base_config

    cfg = DictDefault(base_config(tiny_model, "data.jsonl", "out", **overrides))
    prepare_plugins(cfg)
    capabilities = {"bf16": False, "fp8": False, "tf32": False, "n_gpu": 1, "compute_capability": None}
    env = {"torch_version": "2.13.0"}
    with pytest.raises(ValueError, match=message):
        validate_config(cfg, capabilities=capabilities, env_capabilities=env)
    # the same config with the offending setting made right validates
    fixed = {"max_grad_norm": 1.0} if "max_grad_norm" in overrides else {"sample_packing": True}
    cfg = DictDefault(base_config(tiny_model, "data.jsonl", "out", **{**overrides, **fixed}))
    prepare_plugins(cfg)
    validate_config(cfg, capabilities=capabilities, env_capabilities=env)


def test_short_share_is_the_levels_own_else_the_blocks_and_never_the_first_levels():
    block = {"short_share": 0.25, "levels": [{"input_len": 32, "max_steps": 10},
                                             {"input_len": 64, "max_steps": 5, "short_share": 0.5},
                                             {"input_len": 128, "short_share": 0}]}
    cur = Curriculum.model_validate(block)
    assert [cur.short_share_of(k) for k in range(3)] == [0.0, 0.5, 0.0]
    assert Curriculum.model_validate({**GOOD, "short_share": 0.25}).short_share_of(2) == 0.25
