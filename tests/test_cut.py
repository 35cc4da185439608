"""Cuts on real tokenizers (built offline): boundaries, label-aware prompt cuts, alignment."""

import random

import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from axolotl_curriculum.core.cut import DEFAULT_BOUNDARIES, apply_cut, level_cuts
from axolotl_curriculum.testing import build_tokenizer, text
from axolotl_curriculum.data.rows import boundary_mask, row_stats


@pytest.fixture(scope="module", params=["tiny", "other"])
def tokenizer(request, tiny_model, tmp_path_factory):
    if request.param == "tiny":
        return AutoTokenizer.from_pretrained(tiny_model)
    out = tmp_path_factory.mktemp("tok2")
    build_tokenizer(out, seed=7)  # another vocabulary, other merges
    return AutoTokenizer.from_pretrained(out)


def tokenized(tokenizer, n=200, prompt_words=0, seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = tokenizer(text(rng, prompt_words))["input_ids"] if prompt_words else []
        answer = tokenizer(text(rng, rng.randint(5, 80)))["input_ids"] + [tokenizer.eos_token_id]
        ids = prompt + answer
        rows.append({"input_ids": ids, "labels": [-100] * len(prompt) + answer,
                     "attention_mask": [1] * len(ids), "position_ids": list(range(len(ids)))})
    return Dataset.from_list(rows)


@pytest.mark.parametrize("input_len", [8, 16, 32, 64])
def test_segment_cuts_end_on_a_boundary_when_one_is_in_the_window(tokenizer, input_len):
    ds = tokenized(tokenizer)
    mask = boundary_mask(tokenizer, DEFAULT_BOUNDARIES)
    rows = row_stats(ds, mask)
    cuts = level_cuts(rows, input_len, "segment", window=0.5)
    fell_back = 0
    for i in range(len(ds)):
        ids = ds[i]["input_ids"]
        end = int(cuts.end[i])
        assert 1 <= end <= min(input_len, len(ids))
        if len(ids) <= input_len:
            assert end == len(ids)
            continue
        window = ids[int(np.ceil(input_len * 0.5)) - 1 : input_len]
        if any(mask[t] for t in window):
            assert mask[ids[end - 1]], "the kept prefix ends on a boundary token"
            text_kept = tokenizer.decode(ids[:end])
            assert text_kept.rstrip(" ").endswith(DEFAULT_BOUNDARIES) or ids[end - 1] == tokenizer.eos_token_id
            assert not any(mask[t] for t in ids[end:input_len]), "it is the longest such prefix"
        else:
            assert end == input_len
            fell_back += 1
    assert fell_back < len(ds)


@pytest.mark.parametrize("keep_prompt_head", [0, 3])
@pytest.mark.parametrize("input_len", [4, 12, 24])
def test_left_prompt_cut_keeps_a_trainable_token(tokenizer, input_len, keep_prompt_head):
    ds = tokenized(tokenizer, prompt_words=30, seed=1)  # prompts longer than every level
    rows = row_stats(ds)
    cuts = level_cuts(rows, input_len, "head", prompt_cut="left", keep_prompt_head=keep_prompt_head)
    assert cuts.fed.all()
    for i in range(len(ds)):
        row = ds[i]
        fed = apply_cut(row, *cuts.spec(i)[1:])
        assert len(fed["input_ids"]) <= input_len
        assert any(label != -100 for label in fed["labels"][1:]), "a scored label survives"
        assert all(len(fed[k]) == len(fed["input_ids"]) for k in fed)
        assert fed["position_ids"] == list(range(len(fed["input_ids"])))
        head = min(keep_prompt_head, input_len - 2)
        assert fed["input_ids"][:head] == row["input_ids"][:head]
        # what follows the head is one contiguous piece of the row, reaching into the answer
        start = int(cuts.start[i])
        assert fed["input_ids"][head:] == row["input_ids"][start : start + len(fed["input_ids"]) - head]


def test_head_cut_without_prompt_cut_skips_rows_with_no_label_left(tokenizer):
    ds = tokenized(tokenizer, n=50, prompt_words=30, seed=2)
    cuts = level_cuts(row_stats(ds), 12, "head", prompt_cut="none")
    assert not cuts.fed.any()


def test_apply_cut_keeps_columns_aligned():
    row = {"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, 4, 5], "position_ids": [0, 1, 2, 3, 4],
           "attention_mask": [1] * 5, "length": 5}
    assert apply_cut(row, 0, 0, 3) == {"input_ids": [1, 2, 3], "labels": [-100, -100, 3],
                                       "position_ids": [0, 1, 2], "attention_mask": [1] * 3, "length": 5}
    assert apply_cut(row, 1, 3, 5)["input_ids"] == [1, 4, 5]
    assert apply_cut(row, 1, 3, 5)["position_ids"] == [0, 1, 2]
    assert apply_cut(row, 0, 0, 9) is row


def test_filter_rows_wait_or_follow_excess_length_strategy(tokenizer):
    rows = row_stats(tokenized(tokenizer, n=100))
    short = level_cuts(rows, 16, "filter")
    assert (short.fed == (rows.lengths <= 16)).all() and (short.waits == (rows.lengths > 16)).all()
    last_drop = level_cuts(rows, 16, "filter", last_level=True, truncate_excess=False)
    assert not last_drop.waits.any() and (last_drop.fed == (rows.lengths <= 16)).all()
    last_cut = level_cuts(rows, 16, "filter", last_level=True, truncate_excess=True)
    assert last_cut.fed.all() and (last_cut.lengths <= 16).all()
