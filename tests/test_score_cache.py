"""The difficulty score cache: its key, load/store, and a run that loads instead of scoring."""

import logging

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_curriculum import score_cache
from axolotl_curriculum.config import Difficulty
from axolotl_curriculum.rows import content_digest
from axolotl_curriculum.run import CurriculumRun
from test_model_scores import instructions

LEVELS = [{"input_len": 64, "max_steps": 2, "admit": 0.5}, {"input_len": 64}]


def parts(dataset, tokenizer, spec, model=None):
    return {"dataset": content_digest(dataset),
            "tokenizer": score_cache.tokenizer_part(tokenizer),
            "score": spec, "model": score_cache.model_part(model) if model is not None else None}


def test_the_key_changes_with_the_dataset_tokenizer_score_and_model(tiny_model, tmp_path):
    ds = instructions(tiny_model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    spec = {"score": "loss", "seed": 0}
    base = score_cache.key(parts(ds, tok, spec, model))
    # the same inputs, rebuilt or the data loaded back from disk (as Axolotl's prepared
    # dataset is on a second run): the same key
    again = AutoModelForCausalLM.from_pretrained(tiny_model)
    same = parts(instructions(tiny_model), AutoTokenizer.from_pretrained(tiny_model), dict(spec), again)
    assert score_cache.key(same) == base
    ds.save_to_disk(tmp_path / "prepared")
    assert score_cache.key(parts(load_from_disk(tmp_path / "prepared"), tok, spec, model)) == base
    changed = {
        "rows selected": parts(ds.select(range(1, len(ds))), tok, spec, model),
        "rows shuffled": parts(ds.shuffle(seed=1), tok, spec, model),
        "a label": parts(Dataset.from_list([{**ds[0], "labels": ds[0]["labels"][:-1] + [-100]},
                                            *[ds[i] for i in range(1, len(ds))]]), tok, spec, model),
        "a token": parts(Dataset.from_list([{**ds[0], "input_ids": ds[0]["input_ids"][:-1] + [5]},
                                            *[ds[i] for i in range(1, len(ds))]]), tok, spec, model),
        "score": parts(ds, tok, {"score": "ifd", "seed": 0}, model),
        "seed": parts(ds, tok, {"score": "loss", "seed": 1}, model),
    }
    tok.add_tokens(["<new>"])
    changed["tokenizer"] = parts(ds, tok, spec, model)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    with torch.no_grad():  # one optimizer step's worth of change in one weight
        again.lm_head.weight[0, 0] += 1e-3
    changed["trained model"] = parts(ds, tok, spec, again)
    keys = {name: score_cache.key(p) for name, p in changed.items()}
    assert base not in keys.values(), keys
    assert len(set(keys.values())) == len(keys)


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
