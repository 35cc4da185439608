"""`difficulty:` through the real `axolotl train`: rarity on 1 rank packed, the model's loss on
2 gloo ranks unpacked, the score cache across two runs, and `rescore` on 1 and 2 ranks."""

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import crash_at, two_ranks
from e2e_checks import (assert_cli_plan_equals_training, assert_plan_matches_fed,
                        fed_by_forward)

pytestmark = pytest.mark.e2e


def summary(run):
    return json.loads((run.out / "curriculum_summary.json").read_text())


def fed_rows_per_level(run, ranks=1, caps=(10, 10)):
    """Per level (by the configured caps), the dataset rows the model's forward received on all
    ranks (the fed probe, each example traced back to its row)."""
    fed = fed_by_forward(run.out, ranks)
    starts = [1, 1 + caps[0], 1 + caps[0] + caps[1]]
    out = {0: set(), 1: set(), 2: set()}
    for steps in fed.values():
        for step, st in steps.items():
            out[sum(step >= b for b in starts) - 1] |= {row for row, _, _ in st["fed"]}
    return out


def rarity_reference(out) -> np.ndarray:
    """Row by row from the trainer's dataset: the mean surprisal of a row's tokens under the
    dataset's own token frequencies (docs/difficulty.md's rarity)."""
    lines = (out / "train_rows.jsonl").read_text().splitlines()
    rows = [json.loads(line)["input_ids"] for line in lines]
    counts = Counter(t for row in rows for t in row)
    total = sum(counts.values())
    return np.array([sum(-math.log(counts[t] / total) for t in row) / len(row) for row in rows])


def check_admission(recs, fed, shares, n_rows, reference=None):
    """What the model was fed at each level against the share it admits: no level feeds more
    distinct rows than its share of the data, (with a reference score) only rows among the
    easiest share by it, and the last level feeds rows the earlier ones held back."""
    assert [r["step"] for r in recs] == list(range(1, 31))
    for k, share in enumerate(shares[:-1]):
        assert fed[k] and len(fed[k]) <= round(share * n_rows), k
        if reference is not None:
            limit = np.sort(reference)[round(share * n_rows) - 1]
            assert all(reference[row] <= limit + 1e-9 for row in fed[k]), k
    assert fed[2] - fed[1] - fed[0]  # what waited is fed at the last level
    if reference is not None:
        limit = np.sort(reference)[round(shares[-2] * n_rows) - 1]
        assert any(reference[row] > limit + 1e-9 for row in fed[2])
    assert sum(r["global_deferred"] for r in recs if r["level"] == 0) > 0
    waiting = [r["global_waiting"] for r in recs]
    assert max(waiting) > 0 and waiting[-1] == 0


def test_pure_difficulty_curriculum_at_full_length(axolotl_train, tmp_path):
    """The same input_len at every level, a growing easiest share by rarity (packed)."""
    run = axolotl_train(probe=True, curriculum={"difficulty": "rarity", "levels": [
        {"input_len": 128, "max_steps": 10, "admit": 0.3},
        {"input_len": 128, "max_steps": 10, "admit": 0.6}, {"input_len": 128}]})
    recs = run.rank(0)
    reference = rarity_reference(run.out)
    assert len(reference) == 400
    check_admission(recs, fed_rows_per_level(run), [0.3, 0.6, 1.0], 400, reference)
    assert [row["admit"] for row in summary(run)["levels"]] == [0.3, 0.6, 1.0]
    assert all(r["global_tokens_cut"] == 0 for r in recs)  # nothing is cut: whole rows only
    assert [r["level"] for r in recs] == [0] * 10 + [1] * 10 + [2] * 10
    assert_plan_matches_fed(run.out)  # training's plan holds back what a level does not admit
    plan = assert_cli_plan_equals_training(run, tmp_path / "plan")  # and so does `plan`
    # plan shows what the score means here: each level's admitted share and both ends of it,
    # the same as the row-by-row reference
    view = plan["difficulty"]["levels"]
    ranked = np.sort(reference)
    assert [lv["admitted"] for lv in view] == [120, 240, 400]
    assert [lv["score_max"] for lv in view] == pytest.approx([ranked[119], ranked[239], ranked[-1]],
                                                             rel=1e-9)
    assert all(len(lv["easiest"]) == 3 and all(lv["easiest"]) for lv in view)
    assert "difficulty: rarity (lower is easier)" in plan["stdout"]


def test_two_ranks_unpacked_scored_by_the_models_loss(axolotl_train):
    """`loss`: the model scores the training set before step 1, sharded over the 2 ranks."""
    run = axolotl_train(launcher_args=two_ranks(), env={"ACCELERATE_USE_CPU": "true"}, probe=True,
                        sample_packing=False, micro_batch_size=4,
                        curriculum={"difficulty": {"score": "loss", "sample": 0.5}, "levels": [
                            {"input_len": 64, "max_steps": 10, "admit": 0.5},
                            {"input_len": 96, "max_steps": 10, "admit": 0.8}, {"input_len": 128}]})
    r0, r1 = run.rank(0), run.rank(1)
    check_admission(r0, fed_rows_per_level(run, ranks=2), [0.5, 0.8, 1.0], 400)
    for recs in (r0, r1):
        assert all(r["max_example_len"] <= r["input_len"] for r in recs)
    assert "curriculum: difficulty loss scored 200 examples" in run.output
    same = ("step", "level", "micro_batches")
    assert [[r[k] for k in same] for r in r0] == [[r[k] for k in same] for r in r1]


def test_a_second_run_loads_the_cached_scores(axolotl_train):
    """The model's loss is scored once: a second `axolotl train` on the same data, tokenizer and
    model loads the scores from next to the prepared dataset and feeds the same rows."""
    config = dict(curriculum={"difficulty": "loss", "levels": [
        {"input_len": 128, "max_steps": 10, "admit": 0.3}, {"input_len": 128}]}, max_steps=15)
    first = axolotl_train(**config)
    assert "difficulty scores: computed in" in first.output
    assert "difficulty loss scored 400 examples" in first.output
    [path] = (first.out / "prepared" / "curriculum_scores").glob("*.npy")
    mtime, fed = path.stat().st_mtime_ns, first.rank(0)
    second = axolotl_train(**config)
    assert f"difficulty scores: loaded from cache {path}" in second.output
    assert "difficulty loss scored" not in second.output  # no model pass
    assert path.stat().st_mtime_ns == mtime
    same = ("step", "level", "global_examples", "global_deferred", "global_waiting", "tokens")
    assert [[r[k] for k in same] for r in second.rank(0)] == [[r[k] for k in same] for r in fed]


@pytest.mark.parametrize("ranks", [1, 2])
def test_rescore_at_the_switch_feeds_each_example_once(axolotl_train, ranks):
    """`rescore: true`: the model re-scores the examples before level 1 begins; no example is
    fed twice (a run shorter than one pass), and both ranks take the same re-scored admission."""
    plugins = Path(__file__).with_name("plugins")
    launch = dict(launcher_args=two_ranks(), env={"ACCELERATE_USE_CPU": "true"}) if ranks == 2 else {}
    env = {**launch.pop("env", {}), "PYTHONPATH": f"{plugins}:{os.environ.get('PYTHONPATH', '')}"}
    run = axolotl_train(**launch, env=env, sample_packing=False, micro_batch_size=4,
                        max_steps=25, learning_rate=0.01,
                        plugins=["axolotl_curriculum.CurriculumPlugin", "fed_probe.FedProbe"],
                        curriculum={"difficulty": {"score": "loss", "rescore": True}, "levels": [
                            {"input_len": 128, "max_steps": 10, "admit": 0.3},
                            {"input_len": 128, "max_steps": 10, "admit": 0.6}, {"input_len": 128}]})
    logs = [run.rank(r) for r in range(ranks)]
    [rescore] = [r for r in logs[0] if "rescore_level" in r]  # level 2 admits all: no re-score
    assert rescore["rescore_level"] == 1 and rescore["rescore_from_step"] == 11
    assert rescore["step"] < 11  # taken before the loader may plan level 1
    assert "curriculum: difficulty re-scored at step" in run.output
    same = ("step", "level", "micro_batches", "rescore_level", "rescore_from_step", "rescore_changed")
    for recs in logs[1:]:
        assert [[r.get(k) for k in same] for r in recs] == [[r.get(k) for k in same] for r in logs[0]]
    assert [r["level"] for r in logs[0]] == [0] * 10 + [1] * 10 + [2] * 5
    waiting = [r["global_waiting"] for r in logs[0]]
    assert waiting[9] > 0 and waiting[-1] == 0
    fed = []
    for r in range(ranks):  # the first 25 micro-batches each rank fetched (a prefetch may follow)
        lines = (run.out / f"fed.rank{r}.jsonl").read_text().splitlines()[:25]
        fed += [row for line in lines for row in json.loads(line)]
    assert len(fed) == len(set(fed)) == sum(r["global_examples"] for r in logs[0])


def test_a_resume_after_a_rescore_admits_what_the_uninterrupted_run_admitted(axolotl_train,
                                                                             tmp_path):
    """The checkpoint at step 8 lies after the re-score (step 6) and before the level it admits
    for (step 11); the resumed run, whose model would score otherwise, feeds what the
    uninterrupted one feeds."""
    common = dict(sample_packing=False, micro_batch_size=4, learning_rate=0.01,
                  lr_scheduler="constant", warmup_steps=0, save_strategy="steps", save_steps=8,
                  curriculum={"difficulty": {"score": "loss", "rescore": True}, "levels": [
                      {"input_len": 128, "max_steps": 10, "admit": 0.3},
                      {"input_len": 128, "max_steps": 10, "admit": 0.6}, {"input_len": 128}]})
    keys = ("step", "level", "tokens", "global_examples", "global_deferred", "global_waiting",
            "rescore_from_step", "rescore_changed")
    full = axolotl_train(max_steps=25, **common)
    recs = full.rank(0)
    assert [r["step"] for r in recs if "rescore_level" in r] == [6]
    full.out.rename(tmp_path / "full")  # the interrupted run trains in the same folder anew
    crashed = axolotl_train(max_steps=25, check=False, **common, **crash_at(10))
    assert crashed.proc.returncode != 0
    state = json.loads((full.out / "checkpoint-8" / "curriculum_state.json").read_text())
    assert state["scores"]["from_steps"] == [0, 10]  # the re-score travels with the checkpoint
    resumed = axolotl_train(max_steps=25, resume_from_checkpoint=str(full.out / "checkpoint-8"),
                            **common).rank(0)
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in recs]
    assert resumed[-1]["loss"] == pytest.approx(recs[-1]["loss"], rel=1e-3)
