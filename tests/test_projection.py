"""plan's numbers against an independent count from the lengths (and Axolotl's packer)."""

import itertools
import logging

import numpy as np
import pytest
import torch

from axolotl_curriculum.core.cut import Rows
from axolotl_curriculum.core.flops import train_flops
from axolotl_curriculum.core.names import PLAN_FILE
from axolotl_curriculum.run.projection import format_table, project, run_for

MODEL = {"hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
         "num_attention_heads": 2, "vocab_size": 1024}
LEVELS = [{"input_len": 16, "max_steps": 4}, {"input_len": 48, "max_steps": 3}, {"input_len": 128}]


def rows_of(n=300, seed=0, low=10, high=128, first=None):
    lengths = np.random.default_rng(seed).integers(low, high, size=n)
    return Rows(lengths, np.ones(n, np.int64) if first is None else first)


def unpacked(rows, block, steps=10, batch=4, world=1, accum=1, sample_steps=2000, **kw):
    run = run_for(rows, block, batch_size=batch, world_size=world, grad_accum=accum,
                  total_steps=steps, shuffle=False, **kw)
    return project(run, total_steps=steps, model_config=MODEL, sample_steps=sample_steps)


def padded_flops(lengths, per_batch, multiple=None):
    """Micro-batches of `per_batch` consecutive examples, each row run at the batch's width: its
    longest row, rounded up to the collator's multiple."""
    total = 0.0
    for i in range(0, len(lengths), per_batch):
        batch = lengths[i:i + per_batch]
        width = -(-batch.max() // multiple) * multiple if multiple else batch.max()
        total += train_flops(MODEL, np.full(len(batch), width))
    return total


@pytest.mark.parametrize("multiple", [None, 64])
def test_head_cuts_match_a_count_from_lengths(multiple):
    rows = rows_of()
    p = unpacked(rows, {"levels": LEVELS, "budget": "examples"}, batch=3, world=2, accum=2,
                 pad_to_multiple_of=multiple)
    L = rows.lengths
    total = int(L.sum())
    order = np.arange(10 * 12) % len(L)  # shuffle off: rows in order, 12 examples per step
    for lv, (input_len, first, steps) in zip(p["levels"], [(16, 0, 4), (48, 4, 3), (128, 7, 3)]):
        assert lv["steps"] == steps
        assert lv["rows_cut"] == int((L > input_len).sum())
        assert lv["rows_whole"] == int((L <= input_len).sum())
        assert lv["tokens_kept"] == int(np.minimum(L, input_len).sum())
        assert lv["share_tokens_cut"] == pytest.approx(np.maximum(L - input_len, 0).sum() / total)
        fed = L[order[first * 12:(first + steps) * 12]]
        assert lv["examples"] == steps * 12 and lv["examples_per_step"] == 12
        assert lv["tokens"] == int(np.minimum(fed, input_len).sum())
        assert lv["tokens_cut"] == int(np.maximum(fed - input_len, 0).sum())
        cut = np.minimum(fed, input_len)
        assert lv["flops"] == pytest.approx(padded_flops(cut, 3, multiple))
        widths = [-(-b.max() // multiple) * multiple if multiple else b.max()
                  for b in cut.reshape(-1, 3)]
        assert lv["positions"] == 3 * sum(widths) and lv["positions"] >= lv["tokens"]
        assert lv["skipped_no_label"] == lv["skipped_too_long"] == lv["prompt_cut"] == 0
    t = p["total"]
    assert t["exact"] and t["steps"] == 10
    assert t["flops_full_length"] == pytest.approx(padded_flops(L[:120], 3, multiple))
    assert t["ratio"] == pytest.approx(t["flops"] / t["flops_full_length"])
    assert t["ratio"] < 1  # fewer tokens at the short levels under the examples budget


def test_prompt_cut_and_skip_counts():
    rows = rows_of(n=100, low=60, high=100, first=np.full(100, 40))  # prompts of 40 tokens
    left = unpacked(rows, {"levels": LEVELS, "budget": "examples"})
    assert left["levels"][0]["rows_prompt_cut"] == 100  # 16 < 40: every row keeps its answer
    assert left["levels"][0]["prompt_cut"] == 4 * 4
    assert left["levels"][1]["rows_prompt_cut"] == 0 and left["levels"][1]["rows_cut"] == 100
    mixed = rows_of(n=100, low=60, high=100, first=np.where(np.arange(100) % 2, 40, 1))
    none = unpacked(mixed, {"levels": LEVELS, "budget": "examples", "prompt_cut": "none"})
    assert none["levels"][0]["rows_skipped_no_label"] == 50
    assert none["levels"][0]["examples"] == 16 and none["levels"][0]["skipped_no_label"] >= 15
    with pytest.raises(ValueError, match=r"levels\[0\].input_len: 0 examples keep a trainable"):
        unpacked(rows, {"levels": LEVELS, "prompt_cut": "none"})


def test_filter_waits_and_too_long():
    rows = rows_of(n=200, low=10, high=128)
    L = rows.lengths
    p = unpacked(rows, {"levels": [{"input_len": 32, "max_steps": 2}, {"input_len": 100}],
                        "truncation": "filter", "budget": "examples"}, steps=4)
    first, last = p["levels"]
    assert first["rows_waiting"] == int((L > 32).sum()) and first["rows_cut"] == 0
    assert last["rows_skipped_too_long"] == int((L > 100).sum())
    assert first["tokens_cut"] == 0
    kept = unpacked(rows, {"levels": [{"input_len": 32, "max_steps": 2}, {"input_len": 100}],
                           "truncation": "filter"}, steps=4, truncate_excess=True)
    assert kept["levels"][1]["rows_skipped_too_long"] == 0
    assert kept["levels"][1]["rows_cut"] == int((L > 100).sum())


def pack_rows(capacity):
    """A packing collator: each bin becomes one row of `capacity` positions, its examples one
    after another with their own position_ids (padding: -1)."""
    def collate(bins):
        ids = torch.full((len(bins), capacity), -1)
        pos = torch.full((len(bins), capacity), -1)
        for r, b in enumerate(bins):
            flat = [t for example in b for t in example["input_ids"]]
            ids[r, :len(flat)] = torch.tensor(flat)
            pos[r, :len(flat)] = torch.tensor([p for e in b for p in range(len(e["input_ids"]))])
        return {"input_ids": ids, "position_ids": pos}
    return collate


def examples_in(batch) -> list[list[list[int]]]:
    """Per packed row of a collated micro-batch, its examples' token ids (read from the tensors)."""
    out = []
    for ids, pos in zip(batch["input_ids"].tolist(), batch["position_ids"].tolist()):
        row = []
        for t, p in zip(ids, pos):
            if p == 0:
                row.append([])
            if p >= 0:
                row[-1].append(t)
        out.append(row)
    return out


def test_packed_with_axolotls_packer(tmp_path):
    from datasets import Dataset

    from axolotl_curriculum.integrations.plugin import axolotl_pack
    from axolotl_curriculum.run.run import CurriculumRun

    rows = rows_of(n=600)
    run = run_for(rows, {"levels": LEVELS}, batch_size=2, packed=True, capacity=128,
                  bin_size=200, total_steps=10, grad_accum=2, pack=axolotl_pack)
    p = project(run, total_steps=10, model_config=MODEL)
    short, mid, full = p["levels"]
    # The witness: what a real train loader of the same settings hands the model in the short
    # level's 4 steps (8 micro-batches), read from the collated tensors, each example traced back
    # to its row of the dataset (random ids: a 10-16 token prefix names its row).
    rng = np.random.default_rng(1)
    ids = [rng.integers(4, 1024, n).tolist() for n in rows.lengths]
    dataset = Dataset.from_list([{"input_ids": x, "labels": x} for x in ids])
    by_prefix = {tuple(x[:16]): i for i, x in enumerate(ids)}
    assert len(by_prefix) == len(ids)
    loader = CurriculumRun({"levels": LEVELS}, tmp_path, grad_accum=2).train_loader(
        dataset, pack_rows(128), 2, seed=42, pack=axolotl_pack, capacity=128, bin_size=200,
        max_steps=10)
    batches = list(itertools.islice(iter(loader), 8))
    examples = tokens = tokens_cut = 0
    for step in range(4):
        fed = [examples_in(b) for b in batches[2 * step:2 * step + 2]]
        rows_fed = []
        for packed_row in (r for mb in fed for r in mb):
            # a row is full but for a gap smaller than any piece (10-16 tokens; rows left over
            # twice go in first, so a row may end a few tokens short of 128)
            assert 128 - sum(map(len, packed_row)) < 10
            for example in packed_row:
                i = by_prefix[tuple(example[:16])]
                assert example == ids[i][:16]  # the row's head, cut at input_len 16
                rows_fed.append(i)
                examples, tokens = examples + 1, tokens + len(example)
                tokens_cut += len(ids[i]) - len(example)
        assert len(rows_fed) == len(set(rows_fed))  # no example twice in a step
    assert (short["examples"], short["tokens"], short["tokens_cut"]) == (examples, tokens, tokens_cut)
    assert short["steps"] == 4 and short["tokens_per_step"] == tokens / 4
    assert 0.97 * 2 * 2 * 128 <= short["tokens_per_step"] <= 2 * 2 * 128
    assert short["examples_per_step"] >= 2 * 2 * 128 / 16
    assert short["examples_per_step"] > mid["examples_per_step"] > full["examples_per_step"]
    assert full["tokens_per_step"] <= 4 * 128
    assert short["rel_flops_per_token"] < mid["rel_flops_per_token"] < 1.01
    table = format_table(p)
    assert "input_len" in table and "compute:" in table.splitlines()[-1]


def test_long_runs_are_sampled_per_level():
    rows = rows_of()
    p = unpacked(rows, {"levels": [{"input_len": 16, "max_steps": 30}, {"input_len": 128}],
                        "budget": "examples"}, steps=100, sample_steps=10)
    assert not p["total"]["exact"]
    assert [lv["steps"] for lv in p["levels"]] == [30, 70]
    assert p["levels"][0]["examples"] == 30 * 4 and p["levels"][1]["examples"] == 70 * 4
    assert "projected from their mean" in format_table(p)


def test_sense_grad_levels_show_min_and_cap():
    block = {"levels": [{"input_len": 16, "max_steps": 8, "min_steps": 3}, {"input_len": 128}],
             "sense_grad": True}
    p = unpacked(rows_of(), block)
    assert (p["levels"][0]["min_steps"], p["levels"][0]["max_steps"]) == (3, 8)
    assert "8 (3-8)" in format_table(p)


def test_attention_share_and_activations_from_the_shapes():
    """Unpacked, every row of a micro-batch runs at the batch's padded width: attention costs
    12 x layers x heads x head_dim x width^2 per row (PaLM's count), the rest 6N per position;
    the activation estimate is 34 x layers x hidden + 8 x vocab bytes per position of the
    level's largest micro-batch (its longest row x the examples a micro-batch holds)."""
    rows = rows_of()
    p = unpacked(rows, {"levels": LEVELS, "budget": "examples"}, batch=3, world=2, accum=2,
                 pad_to_multiple_of=64)
    L = rows.lengths
    order = np.arange(10 * 12) % len(L)
    layers, heads, head_dim, hidden, vocab = 2, 2, 16, 32, 1024
    for lv, (input_len, first, steps) in zip(p["levels"], [(16, 0, 4), (48, 4, 3), (128, 7, 3)]):
        cut = np.minimum(L[order[first * 12:(first + steps) * 12]], input_len)
        widths = np.array([-(-b.max() // 64) * 64 for b in cut.reshape(-1, 3)])
        attention = 12 * layers * heads * head_dim * 3 * (widths.astype(float) ** 2).sum()
        assert lv["attention_share"] == pytest.approx(attention / lv["flops"])
        longest = -(-min(int(L.max()), input_len) // 64) * 64
        assert lv["activation_gb"] == pytest.approx(
            3 * longest * (34 * layers * hidden + 8 * vocab) / 1e9)
    assert p["levels"][0]["attention_share"] < p["levels"][2]["attention_share"]


def test_a_level_skipped_for_want_of_rows_projects_no_shape():
    """A filter level no row fits is skipped; the plan still projects (no shape, no memory)."""
    from axolotl_curriculum.integrations.plugin import axolotl_pack

    rows = rows_of(low=40)
    run = run_for(rows, {"truncation": "filter", "levels": LEVELS}, batch_size=2, packed=True,
                  capacity=128, bin_size=200, pack=axolotl_pack, total_steps=10, shuffle=False)
    p = project(run, total_steps=10, model_config=MODEL)
    assert p["levels"][0]["steps"] == 0 and p["levels"][0]["activation_gb"] == 0
    assert p["levels"][2]["activation_gb"] > 0


def test_a_plan_that_cannot_be_written_is_logged_or_raised_when_strict(tmp_path, monkeypatch,
                                                                       caplog):
    """Training never fails over its plan file; under AXOLOTL_CURRICULUM_STRICT=1 (tests) it does."""
    from axolotl_curriculum.run import projection

    def broken(run, **kwargs):
        raise RuntimeError("no plan today")

    monkeypatch.setattr(projection, "project_run", broken)
    monkeypatch.delenv(projection.STRICT_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="axolotl_curriculum"):
        assert projection.write_run_plan(None, tmp_path, model_config=MODEL) is None
    assert f"{PLAN_FILE} not written: RuntimeError: no plan today" in caplog.text
    monkeypatch.setenv(projection.STRICT_ENV, "1")
    with pytest.raises(RuntimeError, match="no plan today"):
        projection.write_run_plan(None, tmp_path, model_config=MODEL)
    assert not (tmp_path / PLAN_FILE).exists()
