"""SENSE_GRAD through the real `axolotl train`: holds while turbulent, advances when settled."""

import json
import re
import subprocess

import pytest
import yaml

from axolotl_curriculum.testing import axolotl_env, base_config
from conftest import ONE_PROCESS, crash_at, two_ranks
from e2e_checks import assert_report, logged_ladder

pytestmark = pytest.mark.e2e

LEVELS = [{"input_len": 32, "max_steps": 40}, {"input_len": 64, "max_steps": 40}, {"input_len": 128}]
GATE = {"check_every": 5, "window": 10, "settle_steps": 3, "min_steps": 10}


def decisions(records, action=None):
    return [r for r in records if "decision" in r and (action is None or r["decision"] == action)]


def first_step_at(records, level):
    return min(r["step"] for r in records if r["level"] == level)


def test_holds_while_volatile_then_advances(axolotl_train):
    # learning rate 0.03 makes the tiny llama's first steps turbulent
    run = axolotl_train(learning_rate=0.03, max_steps=80, logging_steps=10,
                        curriculum={"levels": LEVELS, "sense_grad": GATE})
    recs = run.rank(0)
    assert all(r["max_example_len"] <= r["input_len"] for r in recs)
    level0 = [d for d in decisions(recs) if d["level"] == 0]
    holds = [d for d in level0 if d["decision"] == "hold" and d["steps_in_level"] >= 10]
    assert holds, "the gate should hold level 0 past min_steps while the gradient norm is volatile"
    assert all(d["grad_cv"] > 0.3 or d["spikes"] > 0 for d in holds)
    [advance] = [d for d in level0 if d["decision"] == "advance"]
    assert advance["grad_cv"] <= 0.3 and advance["spikes"] == 0
    assert advance["step"] > holds[-1]["step"]
    # the switch reaches the data exactly where the decision said, on every record
    announced = int(re.search(r"level 1 from step (\d+)", advance["reason"]).group(1))
    assert first_step_at(recs, 1) == announced < 41  # before max_steps would have forced it
    # the trainer's log line carries the gate's statistics
    assert "'curriculum/grad_cv'" in run.output


def test_max_steps_forces_the_advance(axolotl_train):
    strict = {**GATE, "max_grad_cv": 1e-6}
    levels = [{"input_len": 32, "max_steps": 12}, {"input_len": 64, "max_steps": 12}, {"input_len": 128}]
    recs = axolotl_train(max_steps=30, curriculum={"levels": levels, "sense_grad": strict}).rank(0)
    assert not decisions(recs, "advance")
    assert first_step_at(recs, 1) == 13 and first_step_at(recs, 2) == 25
    assert all(d["decision"] in ("hold", "pending", "last_level") for d in decisions(recs))


def test_two_ranks_take_the_same_decisions(axolotl_train):
    # levels: auto, so the 2-rank run also resolves the same ladder on both ranks
    run = axolotl_train(launcher_args=two_ranks(),
                        env={"ACCELERATE_USE_CPU": "true"}, learning_rate=0.03, max_steps=60,
                        curriculum={"levels": "auto", "auto": {"min_input_len": 32},
                                    "sense_grad": GATE})
    r0, r1 = run.rank(0), run.rank(1)
    assert [r["step"] for r in r0] == [r["step"] for r in r1] == list(range(1, 61))
    assert [r["level"] for r in r0] == [r["level"] for r in r1]
    assert len(set(r["level"] for r in r0)) >= 2
    assert [r["loss"] for r in r0] != [r["loss"] for r in r1]  # different data per rank
    keys = ("step", "decision", "reason", "grad_cv", "spikes", "loss_slope")
    assert [tuple(d[k] for k in keys) for d in decisions(r0)] == \
        [tuple(d[k] for k in keys) for d in decisions(r1)]
    # auto's ladder: logged once (rank 0), the one both ranks trained, and the summary's
    assert run.output.count("levels: auto chose") == 1
    ladder = logged_ladder(run.output)["levels"]
    assert len(ladder) >= 3 and ladder[-1] == {"input_len": 128}
    lens = [lv["input_len"] for lv in ladder]
    assert all(r["input_len"] == lens[r["level"]] for r in r0 + r1)
    summary = json.loads((run.out / "curriculum_summary.json").read_text())
    assert [lv["input_len"] for lv in summary["curriculum"]["levels"]] == lens
    md = assert_report(run.out)
    assert "ranks: 2 (0, 1)" in md and "## sense_grad decisions" in md
    assert "report_sense_grad.png" in md


RESUME_LEVELS = [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "max_steps": 30},
                 {"input_len": 128}]
RESUME_GATE = {"check_every": 5, "window": 5, "settle_steps": 0, "min_steps": 8,
               "max_grad_cv": 100.0, "max_loss_slope": 1.0}


@pytest.mark.axolotl_api
def test_resume_continues_the_level_and_refuses_a_changed_block(axolotl_train, tmp_path,
                                                                tiny_model, long_corpus):
    common = dict(lr_scheduler="constant", warmup_steps=0, save_strategy="steps", save_steps=15,
                  curriculum={"levels": RESUME_LEVELS, "sense_grad": RESUME_GATE})
    first = axolotl_train(max_steps=30, **common)
    full, full_out = first.rank(0), first.out

    # The interrupted run: checkpoint at step 15 (level 1), then it dies at step 18.
    out = tmp_path / "interrupted"

    def train(max_steps, check=True, **extra):
        cfg = base_config(tiny_model, long_corpus, out, max_steps=max_steps, **{**common, **extra})
        path = tmp_path / f"interrupted-{max_steps}.yml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(["axolotl", "train", str(path), *ONE_PROCESS], env=axolotl_env(),
                              capture_output=True, text=True, timeout=900)
        assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc

    train(18)
    log = out / "curriculum_log.jsonl"
    assert (out / "checkpoint-15" / "curriculum_state.json").exists()
    resume = str(out / "checkpoint-15")

    changed = {**common, "curriculum": {"levels": [{"input_len": 48, "max_steps": 10},
                                                   *RESUME_LEVELS[1:]], "sense_grad": RESUME_GATE}}
    proc = train(30, check=False, resume_from_checkpoint=resume, **changed)
    assert proc.returncode != 0
    assert "checkpoint was trained with other levels" in proc.stdout + proc.stderr
    assert "restart_on_resume: true" in proc.stdout + proc.stderr

    summary_full = json.loads((full_out / "curriculum_summary.json").read_text())
    # a setting that changes nothing fed (preflight) does not refuse the resume
    train(30, resume_from_checkpoint=resume,
          curriculum={**common["curriculum"], "preflight": False})
    resumed = sorted((json.loads(l) for l in log.read_text().splitlines()), key=lambda r: r["step"])
    assert [r["step"] for r in resumed] == list(range(1, 31)), "steps 16-18 are written once"
    assert resumed[15]["level"] == 1  # step 16 continues level 1
    for a, b in zip(full, resumed):
        keys = ("step", "level", "input_len", "max_example_len", "tokens", "micro_batches",
                "global_examples", "global_tokens_cut")
        assert [a[k] for k in keys] == [b[k] for k in keys]  # planned accounting too
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    [adv_full] = decisions(full, "advance")
    [adv_resumed] = decisions(resumed, "advance")
    assert adv_full["step"] == adv_resumed["step"] == 20
    assert adv_full["steps_in_level"] == adv_resumed["steps_in_level"] == 10
    assert adv_full["reason"] == adv_resumed["reason"]
    # the summary was checkpointed: it covers the whole run, not only the resumed part
    summary = json.loads((out / "curriculum_summary.json").read_text())
    assert summary["levels"] == summary_full["levels"]
    md = assert_report(out)  # a resumed run: the log and the restored summary agree
    assert "steps: 30 (1 to 30)" in md

    # The user may choose to start the levels over under the changed block.
    restart = {**changed, "curriculum": {**changed["curriculum"], "restart_on_resume": True}}
    train(30, resume_from_checkpoint=resume, **restart)
    restarted = sorted((json.loads(l) for l in log.read_text().splitlines()), key=lambda r: r["step"])
    assert [r["step"] for r in restarted] == list(range(1, 31))
    assert [(r["level"], r["input_len"]) for r in restarted[15:26]] == [(0, 48)] * 10 + [(1, 64)]
    assert all(r["max_example_len"] <= r["input_len"] for r in restarted)
    # restarted levels: the summary counts from the restart, the log keeps the steps before it
    md = assert_report(out, summary_agrees=False)
    assert "curriculum_summary.json, level 0: steps 10 (log: 20)" in md


# not on axolotl 0.21 too: Axolotl's resume path is the one the test above takes there; this one
# adds the plugin's own filter-mode and epoch bookkeeping (the same on every version)
def test_resume_inside_filter_mode_across_an_epoch_boundary(axolotl_train, tmp_path, tiny_model):
    """60 rows, 4 per step unpacked: 15 steps per epoch. The checkpoint (step 16) lies in the
    second epoch, inside a filter level with rows still waiting; the resumed run must feed
    what an uninterrupted one feeds."""
    from axolotl_curriculum.testing import write_corpus

    data = write_corpus(tmp_path / "small.jsonl", tiny_model, n=60, min_tokens=70,
                        max_tokens=128, seed=5)
    common = dict(datasets=[{"path": str(data), "type": "completion", "ds_type": "json"}],
                  sample_packing=False, micro_batch_size=4, lr_scheduler="constant",
                  warmup_steps=0, save_strategy="steps", save_steps=16,
                  curriculum={"levels": [{"input_len": 100, "max_steps": 20}, {"input_len": 128}],
                              "truncation": "filter"})
    keys = ("step", "level", "input_len", "max_example_len", "tokens", "micro_batches",
            "global_examples", "global_deferred", "global_waiting")
    full = [[r[k] for k in keys] for r in axolotl_train(max_steps=24, **common).rank(0)]
    assert [row[0] for row in full] == list(range(1, 25))
    assert full[15][1] == 0 and full[15][-1] > 0  # step 16: level 0, rows waiting

    out = tmp_path / "interrupted"

    def train(crash=None, **extra):
        crashing = crash_at(crash) if crash else {"env": {}}
        cfg = base_config(tiny_model, data, out, max_steps=24,
                          **{**common, **extra, **{k: v for k, v in crashing.items() if k != "env"}})
        path = tmp_path / f"filter-{crash}.yml"
        path.write_text(yaml.safe_dump(cfg))
        proc = subprocess.run(["axolotl", "train", str(path), *ONE_PROCESS], env={**axolotl_env(), **crashing["env"]},
                              capture_output=True, text=True, timeout=900)
        assert (proc.returncode != 0) == bool(crash), proc.stdout[-3000:] + proc.stderr[-3000:]

    train(crash=19)  # dies after step 19; the checkpoint is at 16
    train(resume_from_checkpoint=str(out / "checkpoint-16"))
    lines = (out / "curriculum_log.jsonl").read_text().splitlines()
    resumed = sorted(([json.loads(l)[k] for k in keys] for l in lines), key=lambda row: row[0])
    assert resumed == full
