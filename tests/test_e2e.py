"""The real `axolotl train` CLI on a tiny llama: what each level actually fed the model."""

import json
import re
from pathlib import Path

import pytest

from conftest import two_ranks
from e2e_checks import (assert_cli_plan_equals_training, assert_plan_matches_fed, assert_report,
                        forwards, logged_ladder)

pytestmark = pytest.mark.e2e

LEVELS = [(32, range(1, 11)), (64, range(11, 21)), (128, range(21, 31))]


def assert_levels_fed(records, per_step_capacity=None):
    assert [r["step"] for r in records] == list(range(1, 31)), "the run ends at max_steps"
    previous = 0
    for level, (input_len, steps) in enumerate(LEVELS):
        recs = [r for r in records if r["step"] in steps]
        assert {(r["level"], r["input_len"]) for r in recs} == {(level, input_len)}
        for r in recs:
            # measured from the batch: never above the level, and the cut really changed
            assert previous < r["max_example_len"] <= input_len, r
            if per_step_capacity:
                assert r["tokens"] <= per_step_capacity
        previous = input_len
    return records


@pytest.mark.axolotl_api
def test_packed_levels_switch_at_configured_steps(axolotl_train):
    run = axolotl_train(use_tensorboard=True, probe=True)
    recs = assert_levels_fed(run.rank(0), per_step_capacity=2 * 128)
    # rows stay full: a 32-token level packs 8 pieces per 128-token row
    assert all(r["tokens"] == 256 for r in recs if r["level"] < 2)
    # the last level feeds whole examples (the corpus holds rows of up to 128 tokens)
    assert max(r["max_example_len"] for r in recs if r["level"] == 2) >= 120
    assert "curriculum: level 1 (input_len 64) from step 11" in run.output

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events] = list((run.out / "runs").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events))
    acc.Reload()
    level = {e.step: e.value for e in acc.Scalars("train/curriculum/level")}
    input_len = {e.step: e.value for e in acc.Scalars("train/curriculum/input_len")}
    assert level == {5: 0, 10: 0, 15: 1, 20: 1, 25: 2, 30: 2}
    assert input_len[5] == 32 and input_len[30] == 128

    # the plan training wrote at its start is what it fed; `plan` on the config says the same
    assert_plan_matches_fed(run.out)
    cli = assert_cli_plan_equals_training(run, run.out.parent / "plan")
    assert "level  input_len" in cli["stdout"]
    assert_report(run.out)


@pytest.mark.axolotl_api
def test_unpacked_batches_are_cut(axolotl_train):
    run = axolotl_train(sample_packing=False, micro_batch_size=3, probe=True)
    recs = assert_levels_fed(run.rank(0))
    for r in recs:
        assert r["tokens"] <= 3 * r["input_len"]
    assert all(r["tokens"] == 3 * 32 for r in recs if r["level"] == 0)
    assert_plan_matches_fed(run.out)


def test_lora_with_gradient_accumulation(axolotl_train):
    run = axolotl_train(
        adapter="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_linear=True,
        lora_mlp_kernel=False, lora_qkv_kernel=False, lora_o_kernel=False,
        gradient_accumulation_steps=2,
        curriculum={"levels": [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "max_steps": 10},
                               {"input_len": 128}], "preflight": True,
                    # a gate that never passes: decisions are taken per optimizer step, caps rule
                    "sense_grad": {"check_every": 2, "min_steps": 2, "max_grad_cv": 1e-6}},
    )
    assert "pre-flight at the largest micro-batch (2 rows x 128 tokens) fits" in run.output
    recs = assert_levels_fed(run.rank(0), per_step_capacity=2 * 2 * 128)
    decided = [r for r in recs if "decision" in r]
    assert [r["step"] for r in decided] == list(range(2, 31, 2))  # optimizer steps, not micro-steps
    assert {r["decision"] for r in decided} <= {"hold", "pending", "last_level"}
    assert all(r["tokens"] == 512 for r in recs if r["level"] < 2)  # two full micro-batches


@pytest.mark.axolotl_api
def test_qlora_4bit_with_sense_grad(axolotl_train):
    run = axolotl_train(
        adapter="qlora", load_in_4bit=True, lora_r=8, lora_alpha=16, lora_target_linear=True,
        # Axolotl's fused LoRA kernels dequantize NF4 with CUDA only; bitsandbytes' CPU path works
        lora_mlp_kernel=False, lora_qkv_kernel=False, lora_o_kernel=False,
        optimizer="paged_adamw_8bit",
        plugins=["axolotl_curriculum.CurriculumPlugin", "model_probe.ModelProbe"],
        env={"PYTHONPATH": str(Path(__file__).with_name("plugins"))},
        curriculum={"levels": [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "max_steps": 10},
                               {"input_len": 128}],
                    "sense_grad": {"check_every": 2, "min_steps": 2, "max_grad_cv": 1e-6}},
    )
    probe = json.loads((run.out / "model_probe.rank0.json").read_text())
    assert probe["modules"].get("bitsandbytes.nn.modules.Linear4bit", 0) >= 14  # 7 per layer
    assert probe["quant_types"].get("nf4", 0) >= 14
    recs = assert_levels_fed(run.rank(0), per_step_capacity=2 * 128)
    decided = [r for r in recs if "decision" in r]
    assert len(decided) == 15 and all(r["grad_norm"] > 0 for r in recs)
    measured = [r for r in decided if r.get("window", 0) >= 3]
    assert measured and all(0 < r["grad_cv"] < 10 for r in measured)  # finite, from real norms


@pytest.mark.axolotl_api
def test_two_ranks_unpacked_token_budget_with_eval_over_epochs(axolotl_train):
    """2 gloo ranks, no packing, `budget: tokens`: short levels take more examples per
    micro-batch (accelerate used to drop those steps), eval on a set that does not divide
    evenly (it could hang), and three epochs of 11 steps."""
    run = axolotl_train(launcher_args=two_ranks(), env={"ACCELERATE_USE_CPU": "true"}, probe=True,
                        sample_packing=False, micro_batch_size=8, gradient_accumulation_steps=2,
                        val_set_size=0.1, eval_strategy="steps", eval_steps=10,
                        curriculum={"levels": [{"input_len": 32, "max_steps": 10},
                                               {"input_len": 64, "max_steps": 10},
                                               {"input_len": 128}],
                                    "budget": "tokens", "preflight": True})
    r0, r1 = run.rank(0), run.rank(1)
    for recs in (r0, r1):
        assert_levels_fed(recs)  # measured on each rank: every level fed, none above its length
        assert all(r["micro_batches"] == 2 for r in recs)
        assert all(r["max_example_len"] == 32 for r in recs if r["level"] == 0)  # rows are longer
    assert [(r["step"], r["level"]) for r in r0] == [(r["step"], r["level"]) for r in r1]
    # the token budget: a 32-token step holds about as many tokens as a full-length one
    mean = lambda level: sum(r["tokens"] for r in r0 if r["level"] == level) / 10
    assert mean(0) > 0.7 * mean(2)
    assert r0[0]["global_examples"] > 2 * r0[-1]["global_examples"]
    assert run.output.count("'eval_loss'") >= 3  # steps 10, 20, 30: no hang
    # save_strategy "no": no trainer_state.json, yet report has the evals the trainer printed
    from axolotl_curriculum.commands.run_files import load

    printed = [float(x) for x in re.findall(r"'eval_loss': '?([0-9.e+-]+)", run.output)]
    evals = load(run.out).eval_loss
    assert not (run.out / "trainer_state.json").exists()
    assert [s for s, _ in evals][:4] == [0, 10, 20, 30] and len(evals) == len(printed)
    assert all(abs(a - b) <= 1e-3 * b for (_, a), b in zip(evals, printed))
    assert re.search(r"'epoch': '?2\.\d", run.output)  # 360 rows / (8 x 2 x 2) = 11 steps per epoch
    assert "pre-flight at the largest micro-batch" in run.output
    assert_plan_matches_fed(run.out, ranks=2)  # 2 ranks, 3 epochs
    assert_report(run.out)


def test_levels_auto_end_to_end(axolotl_train):
    """`levels: auto` chooses the ladder from the data and the run's 30 steps, logs it at the
    start, trains it, and `plan` on the same config shows the same ladder."""
    run = axolotl_train(curriculum={"levels": "auto", "auto": {"min_input_len": 32}}, probe=True)
    ladder = logged_ladder(run.output)["levels"]
    assert len(ladder) >= 2 and ladder[-1] == {"input_len": 128}
    recs = run.rank(0)
    assert [r["step"] for r in recs] == list(range(1, 31))
    first, at = 1, {}
    for k, level in enumerate(ladder):  # each level trains its steps, cut to its input_len
        last = first + level["max_steps"] - 1 if "max_steps" in level else 30
        at.update({s: (k, level["input_len"]) for s in range(first, last + 1)})
        first = last + 1
    assert [(r["level"], r["input_len"]) for r in recs] == [at[r["step"]] for r in recs]
    assert all(r["max_example_len"] <= r["input_len"] for r in recs)
    summary = json.loads((run.out / "curriculum_summary.json").read_text())
    assert [{k: v for k, v in lv.items() if v is not None}
            for lv in summary["curriculum"]["levels"]] == ladder
    assert_plan_matches_fed(run.out)
    cli = assert_cli_plan_equals_training(run, run.out.parent / "plan")
    assert cli["auto"] and cli["curriculum"]["levels"] == ladder
    assert "levels: auto chooses:" in cli["stdout"]
    assert_report(run.out)


@pytest.mark.axolotl_api
def test_bad_curriculum_fails_before_the_model_loads(axolotl_train):
    run = axolotl_train(check=False, curriculum={"levels": [
        {"input_len": 32, "max_steps": 5}, {"input_len": 16}]})
    assert run.proc.returncode != 0
    assert "curriculum.levels[1].input_len: got 16; levels must grow" in run.output
    assert "Loading model" not in run.output and not (run.out / "curriculum_log.jsonl").exists()


@pytest.mark.axolotl_api
def test_input_len_above_sequence_len_fails(axolotl_train):
    run = axolotl_train(check=False, sequence_len=64)
    assert run.proc.returncode != 0
    assert "curriculum.levels[1].input_len: got 64" not in run.output  # 64 fits
    assert "curriculum.levels[2].input_len: got 128, above sequence_len 64" in run.output


def test_no_curriculum_block_means_no_change(axolotl_train, tmp_path):
    """The plugin listed without a `curriculum:` block: the model's forward receives exactly the
    batches of the same run without the plugin (read by the fed probe from outside)."""
    with_plugin = axolotl_train(curriculum=None, max_steps=6, probe=True)
    assert not (with_plugin.out / "curriculum_log.jsonl").exists()
    fed = forwards(with_plugin.out)
    with_plugin.out.rename(tmp_path / "with_plugin")
    without = axolotl_train(curriculum=None, max_steps=6, probe=True, plugins=[])
    assert fed == forwards(without.out)
    assert [f["step"] for f in fed] == [1, 2, 3, 4, 5, 6]
    assert max(len(ids) for f in fed for ids in f["input_ids"]) > 64  # whole, uncut rows
