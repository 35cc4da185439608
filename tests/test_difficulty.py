"""Difficulty scores against a slow row-by-row reference, admission shares, config errors."""

import math
import zlib

import numpy as np
import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from axolotl_curriculum import Curriculum
from axolotl_curriculum.core.config import Difficulty
from axolotl_curriculum.core.difficulty import admitted
from axolotl_curriculum.data.rows import difficulty_scores

VOCAB = 30


def make(seed, n=120):
    rng = np.random.default_rng(seed)
    rows = [{"input_ids": rng.integers(0, VOCAB, int(k)).tolist(), "my_score": float(rng.random())}
            for k in rng.integers(0, 40, n)]
    return Dataset.from_list(rows)


def views(ds, seed):
    rng = np.random.default_rng(seed)
    return {"whole": ds, "slice": ds.select(range(30, len(ds))),
            "indices": ds.select(rng.permutation(len(ds))[:70].tolist()),
            "shard": ds.shard(3, 2, contiguous=True)}


def reference(name, ds, is_boundary):
    """Each score from `dataset[i]`, one row at a time, from its one-line definition."""
    all_ids = [t for i in range(len(ds)) for t in ds[i]["input_ids"]]
    counts = np.bincount(all_ids, minlength=VOCAB) if all_ids else np.zeros(VOCAB)
    out = []
    for i in range(len(ds)):
        ids = ds[i]["input_ids"]
        if name == "length":
            out.append(len(ids))
        elif name == "segments":
            out.append(sum(bool(is_boundary[t]) for t in ids))
        elif name == "compression":
            raw = np.asarray(ids, dtype=np.uint16).tobytes()
            out.append(len(zlib.compress(raw, 6)) / len(raw) if ids else 0.0)
        elif name == "rarity":
            out.append(np.mean([-math.log(counts[t] / len(all_ids)) for t in ids]) if ids else 0.0)
        elif name == "column":
            out.append(ds[i]["my_score"])
    return np.asarray(out, dtype=np.float64)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(st.integers(0, 2**16))
def test_scores_equal_the_row_by_row_reference(seed):
    is_boundary = np.random.default_rng(seed).random(VOCAB) < 0.3
    for view, ds in views(make(seed), seed).items():
        for name in ("length", "segments", "compression", "rarity", "column"):
            spec = Difficulty.model_validate(Difficulty.validate_raw(
                {"score": name, **({"column": "my_score"} if name == "column" else {})}))
            got = difficulty_scores(ds, spec, is_boundary)
            want = reference(name, ds, is_boundary)  # rarity: the view's own frequencies
            np.testing.assert_allclose(got, want, rtol=1e-9, err_msg=f"{name} on {view}")


def test_rarity_of_a_selection_ignores_tokens_only_unselected_rows_hold():
    ds = Dataset.from_list([{"input_ids": [1, 2, 1]}, {"input_ids": [7, 8, 9]}, {"input_ids": [2, 2]}])
    got = difficulty_scores(ds.select([0, 2]), Difficulty(score="rarity"))
    np.testing.assert_allclose(got, reference("rarity", ds.select([0, 2]), None))
    assert np.isfinite(got).all()


def test_random_is_reproducible_from_its_seed():
    ds = make(2)
    a = difficulty_scores(ds, Difficulty(score="random", seed=3))
    assert np.array_equal(a, difficulty_scores(ds, Difficulty(score="random", seed=3)))
    assert not np.array_equal(a, difficulty_scores(ds, Difficulty(score="random", seed=4)))


@given(st.lists(st.floats(-5, 5), min_size=1, max_size=300), st.floats(0.01, 1.0))
def test_admission_matches_the_share_within_one_example(scores, share):
    scores = np.asarray(scores)
    mask = admitted(scores, share)
    assert abs(mask.sum() - share * len(scores)) <= 1
    if mask.any() and (~mask).any():
        assert scores[mask].max() <= scores[~mask].min()  # easiest first


@pytest.mark.parametrize("block, message", [
    ({"levels": [{"input_len": 8, "max_steps": 3, "admit": 0.5}, {"input_len": 16}]},
     "curriculum.levels[0].admit: needs curriculum.difficulty"),
    ({"difficulty": "density", "levels": [{"input_len": 8}]},
     "curriculum.difficulty.score: got 'density'; use one of length, segments"),
    ({"difficulty": "rarity", "levels": [{"input_len": 8, "max_steps": 3, "admit": 0}, {"input_len": 16}]},
     "curriculum.levels[0].admit: got 0; use a number > 0.0 and <= 1.0"),
    ({"difficulty": "rarity", "levels": [{"input_len": 8, "max_steps": 3, "admit": 0.6},
                                         {"input_len": 16, "max_steps": 3, "admit": 0.4}, {"input_len": 16}]},
     "curriculum.levels[1].admit: got 0.4; admission shares may not shrink"),
    ({"difficulty": {"score": "rarity", "rescore": True}, "levels": [{"input_len": 8}]},
     "curriculum.difficulty.rescore: re-scoring needs a model score"),
    ({"difficulty": {"score": "ifd", "rescore": "yes"}, "levels": [{"input_len": 8}]},
     "curriculum.difficulty.rescore: got 'yes'; use true or false"),
    ({"difficulty": {"score": "rarity", "sample": 0.5}, "levels": [{"input_len": 8}]},
     "curriculum.difficulty.sample: only model scores"),
    ({"difficulty": {"score": "column"}, "levels": [{"input_len": 8}]},
     "curriculum.difficulty.column: score: column needs the column's name"),
    ({"difficulty": "rarity", "levels": [{"input_len": 8, "max_steps": 3, "admit": 0.5},
                                         {"input_len": 8, "max_steps": 3, "admit": 0.5},
                                         {"input_len": 16}]},
     "curriculum.levels[1].input_len: got 8; levels must grow"),
    ({"difficulty": "rarity", "levels": [{"input_len": 8, "max_steps": 3, "admit": 0.5},
                                         {"input_len": 16, "admit": 0.9}]},
     "curriculum.levels[1].admit: the last level admits every example"),
])
def test_bad_difficulty_blocks_name_the_key_and_fix(block, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Curriculum.model_validate(block)


def test_same_input_len_with_a_growing_admit_is_a_pure_difficulty_curriculum():
    cur = Curriculum.model_validate({"difficulty": "compression", "levels": [
        {"input_len": 128, "max_steps": 5, "admit": 0.3}, {"input_len": 128, "max_steps": 5, "admit": 0.7},
        {"input_len": 128}]})
    assert [cur.admit_of(k) for k in range(3)] == [0.3, 0.7, 1.0]


def test_a_column_that_is_not_numeric_is_named():
    ds = Dataset.from_list([{"input_ids": [1, 2], "grade": "easy"}, {"input_ids": [3], "grade": "hard"}])
    spec = Difficulty.model_validate(Difficulty.validate_raw({"score": "column", "column": "grade"}))
    with pytest.raises(ValueError, match="curriculum.difficulty.column: column 'grade' must hold one number"):
        difficulty_scores(ds, spec)
    with pytest.raises(ValueError, match="the dataset has no column 'score'"):
        difficulty_scores(ds, Difficulty(score="column", column="score"))
