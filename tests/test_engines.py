"""Engines with sharded gradients and states: levels, the gate's norm, the fixed micro-batch.

DeepSpeed ZeRO runs through the real `axolotl train` on 2 gloo ranks, with a start-up shim
(tests/shims/sitecustomize.py) for three CUDA assumptions above DeepSpeed. FSDP cannot run
through Axolotl here: accelerate enables FSDP only for accelerator device types and Axolotl
builds its FSDP device mesh on "cuda". torch's FSDP itself runs on CPU, so the FSDP tests shard
the tiny llama over 2 gloo ranks and pass the norm accelerate would return through the plugin's
conversion (`norm_scalar`).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from axolotl_curriculum.testing import axolotl_env
from conftest import two_ranks
from test_e2e import assert_levels_fed
from test_e2e_rope import check_steps, rope_levels

HERE = Path(__file__).parent
WORKER = HERE / "fsdp_grad_norm.py"


# levels that change the RoPE base at steps 11 and 21 (sense_grad never advances early here)
ZERO_LEVELS, ZERO_ROPE = rope_levels(10)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_two_ranks(axolotl_train, stage):
    """Levels, the gate's global norm and per-level RoPE under ZeRO's partitions. The rotary
    frequencies are buffers, not partitioned, so each rank's rotary equals a model built anew
    with the level's RoPE at every step (the rope probe; logits skipped: ZeRO-3 partitions the
    weights a fresh forward would need)."""
    run = axolotl_train(
        launcher_args=two_ranks(),
        env={"PYTHONPATH": f"{HERE / 'shims'}:{HERE / 'plugins'}", "DS_CPU_SHIM": "1",
             "ROPE_EXPECTED": json.dumps(ZERO_ROPE), "ROPE_NO_LOGITS": "1"},
        deepspeed=str(HERE.parent / "example_configs" / "deepspeed" / f"zero{stage}.json"),
        plugins=["axolotl_curriculum.CurriculumPlugin", "model_probe.ModelProbe",
                 "rope_probe.RopeProbe"],
        curriculum={"levels": ZERO_LEVELS,
                    "sense_grad": {"check_every": 2, "min_steps": 2, "max_grad_cv": 1e-6}},
    )
    for rank in (0, 1):
        probe = json.loads((run.out / f"model_probe.rank{rank}.json").read_text())
        assert (probe["wrapped"], probe["zero_stage"], probe["world_size"]) == \
            ("DeepSpeedEngine", stage, 2)
        assert probe["engine_optimizer"].startswith("DeepSpeedZeroOptimizer")
        check_steps(json.loads((run.out / f"rope_probe.rank{rank}.json").read_text()),
                    ZERO_ROPE, steps=30)
        assert [r["rope_theta"] for r in run.rank(rank)] == \
            [10_000.0] * 10 + [40_000.0] * 10 + [160_000.0] * 10
    r0, r1 = run.rank(0), run.rank(1)
    for recs in (r0, r1):
        # the fixed micro-batch: 2 packed rows of 128 tokens at every level, full while cut
        assert_levels_fed(recs, per_step_capacity=2 * 128)
        assert all(r["tokens"] == 256 for r in recs if r["level"] < 2)
    # ranks fed different data, and read one global norm (DeepSpeed's, over its partitions)
    assert [r["loss"] for r in r0] != [r["loss"] for r in r1]
    assert [r["grad_norm"] for r in r0] == [r["grad_norm"] for r in r1]
    keys = ("step", "decision", "reason", "grad_cv", "spikes", "loss_slope")
    d0 = [tuple(r[k] for k in keys) for r in r0 if "decision" in r]
    assert len(d0) == 15 and d0 == [tuple(r[k] for k in keys) for r in r1 if "decision" in r]


@pytest.mark.parametrize("version", [1, 2])
def test_fsdp_grad_norm_is_global_on_every_rank(tiny_model, tmp_path, version):
    out = tmp_path / "norm.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER),
                           str(tiny_model), str(version), str(out)],
                          env=axolotl_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["raw_type"] == ("DTensor" if version == 2 else "Tensor")
    assert r["got_type"] == "Tensor" and r["shape"] == []
    assert r["every_rank"][0] == r["every_rank"][1]
    assert r["every_rank"][0] == pytest.approx(r["expected"], rel=1e-5)
    # the gradients really were sharded: one rank's shards alone give another norm
    assert r["local_shard_norm"] < 0.9 * r["expected"]
    assert r["stacked"][0] == pytest.approx(r["expected"], rel=1e-5)


ROPE_LEVELS = [{"input_len": 16, "max_steps": 3},
               {"input_len": 32, "max_steps": 3, "rope_theta": 40_000},
               {"input_len": 64, "rope_theta": 160_000}]


def test_rope_fsdp2_levels_on_two_ranks(tiny_model, tmp_path):
    """Per-level RoPE under FSDP2 (`fully_shard`) in a hand-written loop on 2 gloo ranks
    (tests/fsdp_rope.py): before every step, on both ranks, the sharded model's rotary and config
    carry the level's RoPE, and the full weights gathered from the shards, in a model built anew
    with that RoPE, give the sharded model's logits; with the previous level's RoPE they do not."""
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2",
                           str(HERE / "fsdp_rope.py"), str(tiny_model), json.dumps(ROPE_LEVELS),
                           "9", str(tmp_path)],
                          env=axolotl_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    thetas = [10_000.0] * 3 + [40_000.0] * 3 + [160_000.0] * 3  # the model's own, the levels'
    log = [json.loads(line)
           for line in (tmp_path / "run" / "curriculum_log.jsonl").read_text().splitlines()]
    by_rank = []
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rope.rank{rank}.json").read_text())
        # the worker ran this tree's package, on a model FSDP2 really sharded
        assert Path(r["package"]).resolve().parent == (HERE.parent / "axolotl_curriculum").resolve()
        assert (r["sharded"], r["world_size"]) == ("FSDPLlamaForCausalLM", 2)
        steps = r["steps"]
        assert [s["step"] for s in steps] == list(range(1, 10))
        assert [s["expected"] for s in steps] == [{"rope_type": "default", "rope_theta": t}
                                                  for t in thetas]
        for s, theta in zip(steps, thetas):
            assert s["rope_parameters"] == s["expected"], s["step"]
            # the rotary's frequencies: the fresh model's, and the textbook RoPE of the base
            closed = [theta ** -(i / 16) for i in range(0, 16, 2)]  # head_dim 16
            assert s["inv_freq"] == pytest.approx(s["fresh_inv_freq"], rel=1e-6), s["step"]
            assert s["inv_freq"] == pytest.approx(closed, rel=1e-5), s["step"]
            assert s["logits_diff"] < 1e-5, s
        # the witness tells the levels apart at each switch
        assert [s["step"] for s in steps if "previous_diff" in s] == [4, 7]
        for s in steps:
            if "previous_diff" in s:
                assert s["previous_diff"] > 1e-3 and s["previous_diff"] > 100 * s["logits_diff"], s
        # each level fed its input_len, and the curriculum logged the RoPE it trained with
        assert all(s["width"] <= (16, 32, 64)[(s["step"] - 1) // 3] for s in steps)
        assert [x["rope_theta"] for x in sorted(log, key=lambda x: x["step"])
                if x["rank"] == rank] == thetas
        by_rank.append(steps)
    r0, r1 = by_rank
    assert [s["probe_sum"] for s in r0] == [s["probe_sum"] for s in r1]  # one model, sharded
    assert [s["loss"] for s in r0] != [s["loss"] for s in r1]  # each rank its own data
