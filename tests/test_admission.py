"""What a run admits and counts, against counts taken from the dataset itself: `admit` is a share
of the rows that can train, `never_fits` counts rows, every file is strict JSON, and a score
column that holds no numbers is named."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
from datasets import Dataset

from axolotl_curriculum import CurriculumRun
from axolotl_curriculum.run.projection import write_run_plan

MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
         "num_attention_heads": 2, "vocab_size": 1024}


def rows(n=100, seed=0, untrainable=0.5, low=4, high=120):
    """Rows of `low`-`high` tokens; a share of them has no scored label at all."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ids = [rng.randrange(3, 1000) for _ in range(rng.randint(low, high))]
        labels = [-100] * len(ids) if i % round(1 / untrainable) == 0 else list(ids)
        out.append({"input_ids": ids, "labels": labels, "row": i, "grade": rng.random()})
    return Dataset.from_list(out)


def feed(run, loader, steps=None):
    """Rows fed per 0-based step, closing each step as a loop would."""
    fed = []
    for g, batch in enumerate(loader, start=1):
        fed.append([r["row"] for r in batch])
        run.on_step_end(g)
        if steps and g == steps:
            break
    return fed


def strict_json(text):
    def refuse(constant):
        raise AssertionError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("share", [0.5, 0.6])
def test_admit_is_a_share_of_the_rows_that_can_train(tmp_path, share):
    ds = rows()
    trainable = [i for i in range(len(ds)) if any(t != -100 for t in ds[i]["labels"][1:])]
    grades = np.asarray(ds["grade"])
    want = sorted(sorted(trainable, key=lambda i: grades[i])[:round(share * len(trainable))])
    block = {"difficulty": {"score": "column", "column": "grade"}, "budget": "examples",
             "levels": [{"input_len": 128, "max_steps": 40, "admit": share}, {"input_len": 128}]}
    run = CurriculumRun(block, tmp_path)
    loader = run.train_loader(ds, lambda batch: batch, batch_size=5, max_steps=41, n_batches=41)
    fed = feed(run, loader, steps=40)
    assert sorted({r for step in fed for r in step}) == want  # 40 steps: several passes
    assert run.summary()["levels"][0]["admitted"] == len(want)
    write_run_plan(run, tmp_path, model_config=MODEL)
    strict_json((tmp_path / "curriculum_plan.json").read_text())


def test_never_fits_counts_rows_not_skips(tmp_path):
    ds = rows(n=80, untrainable=0.1)
    lengths = np.asarray([len(ids) for ids in ds["input_ids"]])
    trains = np.asarray([any(t != -100 for t in labels[1:]) for labels in ds["labels"]])
    block = {"truncation": "filter", "levels": [{"input_len": 16, "max_steps": 3},
                                                {"input_len": 48}]}
    run = CurriculumRun(block, tmp_path)
    loader = run.train_loader(ds, lambda batch: batch, batch_size=4, max_steps=40, n_batches=40)
    fed = feed(run, loader)
    assert len(fed) == 40  # about three passes over the rows that fit
    assert all(lengths[r] <= 48 for step in fed for r in step)
    summary = run.summary()
    assert summary["never_fits"] == int(((lengths > 48) & trains).sum())
    assert sum(lv["global_skipped_too_long"] for lv in summary["levels"]) > summary["never_fits"]


def test_a_score_column_without_numbers_is_named_with_the_cache_on(tmp_path):
    ds = rows().map(lambda r: {"grade": f"grade {r['grade']:.2f}"})
    block = {"difficulty": {"score": "column", "column": "grade"},
             "levels": [{"input_len": 64, "max_steps": 3, "admit": 0.5}, {"input_len": 128}]}
    run = CurriculumRun(block, tmp_path, score_cache=tmp_path / "scores")
    with pytest.raises(ValueError, match="column 'grade' must hold one number per example"):
        run.train_loader(ds, lambda batch: batch, batch_size=4, max_steps=9)


def test_a_level_no_row_fills_without_prompt_cut_says_prompt_cut(tmp_path):
    """Prompts of 40 tokens, a 16-token level, `prompt_cut: none`: no row keeps a scored label;
    `prompt_cut: left` would feed every one, and the message says so."""
    ds = Dataset.from_list([{"input_ids": list(range(3, 63)), "labels": [-100] * 40 + list(range(43, 63))}
                            for _ in range(20)])
    block = {"prompt_cut": "none", "levels": [{"input_len": 16, "max_steps": 3}, {"input_len": 64}]}
    with pytest.raises(ValueError, match=r"levels\[0\]\.input_len: 0 examples .* set "
                                         r"curriculum\.prompt_cut: left \(it feeds 20"):
        CurriculumRun(block, tmp_path).train_loader(ds, lambda b: b, batch_size=2, max_steps=9)


def test_levels_that_take_the_whole_run_are_refused_before_step_1(tmp_path, caplog):
    """One epoch of 80 rows in micro-batches of 4 is 20 steps; levels that take 20 leave the
    last (full-length) level none. With sense_grad the caps may end sooner: a warning."""
    ds = rows(n=80, untrainable=0.1)
    block = {"levels": [{"input_len": 16, "max_steps": 12}, {"input_len": 48, "max_steps": 8},
                        {"input_len": 128}]}
    with pytest.raises(ValueError, match="take 20 steps, the run has 20 .*num_train_epochs"):
        CurriculumRun(block, tmp_path).train_loader(ds, lambda b: b, batch_size=4, epochs=1)
    run = CurriculumRun({**block, "sense_grad": {"min_steps": 4}}, tmp_path)
    with caplog.at_level(logging.WARNING, logger="axolotl_curriculum"):
        run.train_loader(ds, lambda b: b, batch_size=4, epochs=1)  # warned, not refused
    assert [r.getMessage() for r in caplog.records if "would never train" in r.getMessage()]
    CurriculumRun(block, tmp_path).train_loader(ds, lambda b: b, batch_size=4, epochs=2)
