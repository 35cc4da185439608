"""`CurriculumRun.train_loader` in a hand-written loop, without Axolotl's patched fetcher: packed
micro-batches through a real torch `DataLoader` and Axolotl's packing collator, and arguments a
loop can get wrong (a packed row smaller than a level, segment cuts without a tokenizer)."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from axolotl_curriculum import CurriculumRun
from axolotl_curriculum.testing import text
from axolotl_curriculum.integrations.plugin import axolotl_pack

LEVELS = [{"input_len": 16, "max_steps": 3}, {"input_len": 48, "max_steps": 3}, {"input_len": 128}]


def dataset(tokenizer, n=80, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        ids = tokenizer(text(rng, rng.randint(4, 40)))["input_ids"][:120]
        out.append({"input_ids": ids, "labels": list(ids), "attention_mask": [1] * len(ids),
                    "position_ids": list(range(len(ids)))})  # packing needs them
    return Dataset.from_list(out)


def segments(row_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor, pad: int):
    """The examples of one packed row, from its position_ids restarts; the padding at the end
    (pad tokens with no label) left out."""
    starts = (position_ids == 0).nonzero().flatten().tolist() + [len(row_ids)]
    out = []
    for a, b in zip(starts, starts[1:]):
        ids, lab = row_ids[a:b], labels[a:b]
        if ((ids == pad) & (lab == -100)).all():
            continue
        out.append(ids.tolist())
    return out


def test_a_packed_loader_runs_through_a_plain_dataloader_with_axolotls_collator(tiny_model,
                                                                              tmp_path):
    from axolotl.utils.collators import V2BatchSamplerDataCollatorForSeq2Seq

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ds = dataset(tokenizer)
    collator = V2BatchSamplerDataCollatorForSeq2Seq(tokenizer, padding=True,
                                                    pad_to_multiple_of=128, return_tensors="pt")
    run = CurriculumRun({"levels": LEVELS}, tmp_path, pad_token_id=tokenizer.pad_token_id)
    loader = run.train_loader(ds, collator, batch_size=2, pack=axolotl_pack, capacity=128,
                              max_steps=9, n_batches=9)
    originals = [list(ids) for ids in ds["input_ids"]]
    for step, batch in enumerate(loader):
        input_len = (16, 48, 128)[step // 3]
        assert batch["input_ids"].shape == (2, 128)
        for r in range(2):
            found = segments(batch["input_ids"][r], batch["position_ids"][r], batch["labels"][r],
                             tokenizer.pad_token_id)
            assert found
            for ids in found:  # each example is the head of a dataset row, cut to the level
                assert len(ids) <= input_len
                assert any(o[:len(ids)] == ids and (len(ids) == input_len or len(o) == len(ids))
                           for o in originals), (step, ids)
    assert step == 8


def test_a_level_longer_than_a_packed_row_is_refused(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    run = CurriculumRun({"levels": LEVELS}, tmp_path)
    with pytest.raises(ValueError, match=r"levels\[2\]\.input_len: 128 .* capacity=64"):
        run.train_loader(dataset(tokenizer), lambda b: b, batch_size=2, pack=axolotl_pack,
                         capacity=64, max_steps=9)


def test_segment_cuts_without_a_tokenizer_name_the_argument(tiny_model, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for block in ({"levels": LEVELS, "truncation": "segment"},
                  {"levels": [{"input_len": 16, "max_steps": 3, "admit": 0.5}, {"input_len": 128}],
                   "difficulty": "segments"}):
        run = CurriculumRun(block, tmp_path)
        with pytest.raises(ValueError, match="pass tokenizer= to train_loader"):
            run.train_loader(dataset(tokenizer), lambda b: b, batch_size=2, max_steps=9)
