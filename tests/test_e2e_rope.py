"""Per-level RoPE through the real `axolotl train`: full weights on 1 process (unpacked), LoRA on
2 gloo ranks (packed), then Axolotl's own `merge-lora`. A probe plugin compares, before every step, each rank's rotary
frequencies (and, with full weights, the logits) with a model built anew from a config that
carries the RoPE this test expects; the saved model reloads with the last level's RoPE."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM

from axolotl_curriculum.testing import axolotl_env
from conftest import ONE_PROCESS, PLUGINS, two_ranks

pytestmark = [pytest.mark.e2e, pytest.mark.axolotl_api]

THETAS = (10_000.0, 40_000.0, 160_000.0)  # the tiny llama's own (testing.save_llama), then raised


def rope_levels(per_level: int) -> tuple[list[dict], list]:
    """Levels 32, 64, 128 of `per_level` steps each (the last open-ended), the RoPE base raised
    at each, and the rotary each step should run: [[first step, rope parameters], ...]."""
    levels = [{"input_len": 32, "max_steps": per_level},
              {"input_len": 64, "max_steps": per_level, "rope_theta": THETAS[1]},
              {"input_len": 128, "rope_theta": THETAS[2]}]
    expected = [[1 + i * per_level, {"rope_type": "default", "rope_theta": t}]
                for i, t in enumerate(THETAS)]
    return levels, expected


LEVELS, EXPECTED = rope_levels(4)


def probed(axolotl_train, launcher=ONE_PROCESS, **overrides):
    env = {"ROPE_EXPECTED": json.dumps(EXPECTED),
           "PYTHONPATH": os.pathsep.join(p for p in (str(PLUGINS), os.environ.get("PYTHONPATH")) if p)}
    return axolotl_train(launcher, env=env, max_steps=12, logging_steps=4,
                         plugins=["axolotl_curriculum.CurriculumPlugin", "rope_probe.RopeProbe"],
                         curriculum={"levels": LEVELS}, **overrides)


def seen(run, rank):
    return json.loads((run.out / f"rope_probe.rank{rank}.json").read_text())


def check_steps(records, expected=EXPECTED, steps=12):
    assert [r["step"] for r in records] == list(range(1, steps + 1))
    for r in records:
        want = [p for first, p in expected if first <= r["step"]][-1]
        assert r["inv_freq"] and all(r["scaling"]), r
        assert r["config"]["rope_theta"] == want["rope_theta"], r
        if "logits_diff" in r:
            assert r["logits_diff"] < 1e-5, r


def test_full_weights_one_rank_each_level_runs_its_rope_and_the_saved_model_keeps_it(axolotl_train):
    run = probed(axolotl_train, sample_packing=False)
    check_steps(seen(run, 0))
    assert [r["rope_theta"] for r in run.rank(0)] == [10_000.0] * 4 + [40_000.0] * 4 + [160_000.0] * 4
    saved = AutoModelForCausalLM.from_pretrained(run.out)
    assert saved.config.rope_parameters["rope_theta"] == 160_000.0
    with torch.no_grad():  # it generates with that RoPE (not the base's): its rotary says so
        rotary = saved.model.rotary_emb
        dim = rotary.inv_freq.numel() * 2
        torch.testing.assert_close(rotary.inv_freq,
                                   1.0 / 160_000.0 ** (torch.arange(0, dim, 2).float() / dim))


def test_lora_two_ranks_packed_every_rank_switches_at_the_same_step(axolotl_train):
    run = probed(axolotl_train, two_ranks(), adapter="lora", lora_r=4, lora_alpha=8,
                 lora_target_modules=["q_proj", "v_proj"], learning_rate=1e-2)
    for rank in (0, 1):
        check_steps(seen(run, rank))
        assert [r["rope_theta"] for r in run.rank(rank)] == ([10_000.0] * 4 + [40_000.0] * 4
                                                             + [160_000.0] * 4)
    # the adapter's folder carries the base config with the last level's RoPE ...
    assert json.loads((run.out / "config.json").read_text())["rope_parameters"]["rope_theta"] == 160_000.0
    # ... so Axolotl's own merge-lora writes a merged model that runs with it: the curriculum
    # merges with `legacy` (the memory-efficient merge copies the base model's config.json) ...
    merge = merge_lora(run)
    assert merge.returncode == 0, merge.stdout[-3000:] + merge.stderr[-3000:]
    assert "merge_method: legacy" in merge.stdout + merge.stderr
    merged = AutoModelForCausalLM.from_pretrained(run.out / "merged")
    assert merged.config.rope_parameters["rope_theta"] == 160_000.0
    # ... whose logits are the base model's with the adapter and that RoPE, built here by peft
    base = AutoModelForCausalLM.from_pretrained(
        yaml.safe_load(run.config.read_text())["base_model"],
        rope_parameters={"rope_type": "default", "rope_theta": 160_000.0})
    reference = PeftModel.from_pretrained(base, run.out)
    ids = torch.arange(5, 69).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)
    # an explicit memory-efficient merge is refused, naming the key and the fix
    refused = merge_lora(run, "--merge-method=memory_efficient")
    assert refused.returncode != 0
    assert "merge_method: memory_efficient" in refused.stderr.strip().splitlines()[-1]


def merge_lora(run, *args):
    env = {**axolotl_env(), "PYTHONPATH": os.pathsep.join(
        p for p in (str(PLUGINS), os.environ.get("PYTHONPATH")) if p), "ROPE_EXPECTED": json.dumps(EXPECTED)}
    return subprocess.run(["axolotl", "merge-lora", str(run.config), *args], env=env,
                          capture_output=True, text=True, timeout=600)
