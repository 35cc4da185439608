"""The difficulty score cache: its key, load/store, and a run that loads instead of scoring."""

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_curriculum.data import score_cache
from axolotl_curriculum.core.config import Difficulty
from axolotl_curriculum.run.run import CurriculumRun
from test_model_scores import instructions

LEVELS = [{"input_len": 64, "max_steps": 2, "admit": 0.5}, {"input_len": 64}]


def test_the_key_changes_with_the_dataset_tokenizer_score_and_model(tiny_model, tmp_path, caplog):
    """Real runs (`CurriculumRun.train_loader`, model scores) on one cache folder: the same data,
    tokenizer, score and model, rebuilt or loaded back from disk, hit the file the first run
    wrote; a change of any one of them writes a file of its own (a stale hit would feed the
    wrong admission)."""
    caplog.set_level(logging.INFO, logger="axolotl_curriculum")
    cache = tmp_path / "cache"
    ds = instructions(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    spec = {"score": "loss", "seed": 0}

    def files():
        return {p.name for p in cache.glob("*.npy")}

    def train(dataset, tokenizer, difficulty, model_):
        before = files()
        caplog.clear()
        loader(tmp_path, dataset, tokenizer, difficulty, model_)
        return files() - before, caplog.text

    written, log = train(ds, tok, spec, model)
    assert len(written) == 1 and "difficulty scores: computed in" in log
    [base] = written
    # the same inputs, rebuilt or the data loaded back from disk (as Axolotl's prepared dataset
    # is on a second run): the first run's file, loaded
    again = AutoModelForCausalLM.from_pretrained(tiny_model)
    ds.save_to_disk(tmp_path / "prepared")
    for name, inputs in {
            "rebuilt": (instructions(tiny_model), AutoTokenizer.from_pretrained(tiny_model),
                        dict(spec), again),
            "from disk": (load_from_disk(tmp_path / "prepared"), tok, spec, model)}.items():
        written, log = train(*inputs)
        assert not written and f"loaded from cache {cache / base}" in log, name
    rest = [ds[i] for i in range(1, len(ds))]
    changed = {
        "rows selected": (ds.select(range(1, len(ds))), tok, spec, model),
        "rows shuffled": (ds.shuffle(seed=1), tok, spec, model),
        "a label": (Dataset.from_list([{**ds[0], "labels": ds[0]["labels"][:-1] + [-100]}, *rest]),
                    tok, spec, model),
        "a token": (Dataset.from_list([{**ds[0], "input_ids": ds[0]["input_ids"][:-1] + [5]}, *rest]),
                    tok, spec, model),
        "score": (ds, tok, {"score": "ifd", "seed": 0}, model),
        "seed": (ds, tok, {"score": "loss", "seed": 1}, model),
    }
    grown = AutoTokenizer.from_pretrained(tiny_model)
    grown.add_tokens(["<new>"])
    changed["tokenizer"] = (ds, grown, spec, model)
    with torch.no_grad():  # one optimizer step's worth of change in one weight
        again.lm_head.weight[0, 0] += 1e-3
    changed["trained model"] = (ds, tok, spec, again)
    seen = {base}
    for name, inputs in changed.items():
        written, log = train(*inputs)
        assert len(written) == 1 and "difficulty scores: computed in" in log, name
        assert not written & seen, name  # a key of its own
        seen |= written
    assert files() == seen and len(seen) == 1 + len(changed)


def test_store_then_load_round_trips_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "cache" / "abc.npy"
    assert score_cache.load(path) is None
    scores = np.array([0.5, np.inf, -1.0])
    score_cache.store(path, scores, {"score": {"score": "rarity"}})
    np.testing.assert_array_equal(score_cache.load(path), scores)
    assert sorted(p.name for p in path.parent.iterdir()) == ["abc.json", "abc.npy"]
    path.write_bytes(b"not an array")  # a damaged file is a miss, never an error
    assert score_cache.load(path) is None


def test_only_when_every_rank_hits_are_the_scores_loaded(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(3.0)

    p = {"score": "x"}
    got, path, seconds = score_cache.cached(tmp_path, p, 3, compute, write=False)
    assert seconds is not None and not path.exists()  # a rank other than 0 writes nothing
    score_cache.cached(tmp_path, p, 3, compute, write=True)
    assert path.exists() and len(calls) == 2
    score_cache.cached(tmp_path, p, 3, compute, write=True, all_ranks=lambda hit: False)
    assert len(calls) == 3  # another rank missed: all compute (a sharded pass needs all)
    got, _, seconds = score_cache.cached(tmp_path, p, 3, compute, write=True)
    assert seconds is None and len(calls) == 3 and np.array_equal(got, np.arange(3.0))
    score_cache.cached(tmp_path, p, 4, compute, write=True)  # another row count: a miss
    assert len(calls) == 4


def loader(tmp_path, ds, tok, difficulty, model=None):
    run = CurriculumRun({"difficulty": difficulty, "levels": LEVELS}, tmp_path / "out",
                        score_cache=tmp_path / "cache")
    run.train_loader(ds, lambda b: b, batch_size=2, tokenizer=tok, model=model)
    return run


@pytest.mark.parametrize("difficulty", ["compression", {"score": "loss"}])
def test_a_second_run_loads_the_scores_instead_of_computing_them(tiny_model, tmp_path, caplog,
                                                                 difficulty):
    ds, tok = instructions(tiny_model, n=40), AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    caplog.set_level(logging.INFO, logger="axolotl_curriculum")
    first = loader(tmp_path, ds, tok, difficulty, model)
    assert "difficulty scores: computed in" in caplog.text
    [path] = (tmp_path / "cache").glob("*.npy")
    mtime = path.stat().st_mtime_ns
    caplog.clear()
    second = loader(tmp_path, ds, tok, difficulty, model)
    assert f"difficulty scores: loaded from cache {path}" in caplog.text
    assert "scored" not in caplog.text  # no model pass
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.cuts(0).fed, second.cuts(0).fed)


def test_cache_false_computes_every_time_and_writes_nothing(tiny_model, tmp_path, caplog):
    ds, tok = instructions(tiny_model, n=40), AutoTokenizer.from_pretrained(tiny_model)
    caplog.set_level(logging.INFO, logger="axolotl_curriculum")
    loader(tmp_path, ds, tok, {"score": "rarity", "cache": False})
    assert not (tmp_path / "cache").exists() and "difficulty scores" not in caplog.text


def test_cache_must_be_a_boolean():
    with pytest.raises(ValueError, match="curriculum.difficulty.cache: got 'no'; use true or false"):
        Difficulty.validate_raw({"score": "rarity", "cache": "no"})
