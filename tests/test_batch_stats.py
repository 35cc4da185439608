"""Batch measurements against Axolotl's real collators: padding is never counted as fed (but
counted in `positions`, what the model runs on), and attention's work is counted per example,
not per packed row."""

import pytest
from transformers import AutoTokenizer

from axolotl_curriculum.run.batch_stats import measure_batch


def sq(*lengths):
    """Attention's work: the sum of the examples' squared lengths."""
    return sum(n * n for n in lengths)


def feature(n, start=5, masked_prompt=0, mask=True):
    ids = list(range(start, start + n))
    row = {"input_ids": ids, "labels": [-100] * masked_prompt + ids[masked_prompt:],
           "position_ids": list(range(n))}
    if mask:
        row["attention_mask"] = [1] * n
    return row


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("collator_name", ["BatchSamplerDataCollatorForSeq2Seq",
                                           "V2BatchSamplerDataCollatorForSeq2Seq"])
def test_packed_rows(tokenizer, collator_name, mask):
    from axolotl.utils import collators

    collator = getattr(collators, collator_name)(tokenizer, padding=True, pad_to_multiple_of=128,
                                                 return_tensors="pt")
    bins = [[feature(50, mask=mask), feature(30, masked_prompt=10, mask=mask)], [feature(100, mask=mask)]]
    batch = collator(bins)
    batch.pop("attention_mask", None) if not mask else None
    assert measure_batch(batch, tokenizer.pad_token_id).tolist() == [100, 180, sq(50, 30, 100), 2 * 128]


def test_full_row_has_no_padding(tokenizer):
    from axolotl.utils.collators import BatchSamplerDataCollatorForSeq2Seq

    collator = BatchSamplerDataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=64,
                                                  return_tensors="pt")
    batch = collator([[feature(40), feature(24)]])
    assert measure_batch(batch, tokenizer.pad_token_id).tolist() == [40, 64, sq(40, 24), 64]


def test_unpacked_rows(tokenizer):
    from axolotl.utils.collators import DataCollatorForSeq2Seq

    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, pad_to_multiple_of=64,
                                      return_tensors="pt")
    rows = [{k: v for k, v in feature(n).items() if k != "position_ids"} for n in (7, 31, 12)]
    assert measure_batch(collator(rows), tokenizer.pad_token_id).tolist() == [31, 50, sq(7, 31, 12), 3 * 64]
