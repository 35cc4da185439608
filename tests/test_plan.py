"""The batch plan, driven with Axolotl's real packer."""

import numpy as np
import pytest

from axolotl_curriculum.core.cut import Rows, level_cuts
from axolotl_curriculum.core.plan import BatchPlan
from axolotl_curriculum.integrations.plugin import axolotl_pack


def make_rows(n=300, seed=0, low=20, high=128):
    lengths = np.random.default_rng(seed).integers(low, high, size=n)
    return Rows(lengths, np.ones(n, dtype=np.int64))


def make_plan(rows, seed=0, packed=True, **kw):
    if packed:
        return BatchPlan(rows, batch_size=2, seed=seed, capacity=128, bin_size=200,
                         pack=axolotl_pack, **kw)
    return BatchPlan(rows, batch_size=4, seed=seed, **kw)


def run_epoch(plan, schedule, n_batches=24, per_step=4, epoch=0, mode="head"):
    cuts = {L: level_cuts(plan.rows, L, mode, last_level=L == max(schedule)) for L in set(schedule)}
    steps = plan.epoch(epoch, n_batches, per_step, lambda k: cuts[schedule[min(k, len(schedule) - 1)]])
    return [(stats, batch) for stats, batches in steps for batch in batches]


def fed_len(spec):
    row, head, start, end = spec
    return head + end - start


def test_packed_rows_stay_full_and_respect_the_level():
    plan = make_plan(make_rows())
    schedule = [16, 16, 32, 32, 128, 128]
    out = run_epoch(plan, schedule)
    assert len(out) == 24
    for i, (_, batch) in enumerate(out):
        input_len = schedule[i // 4]
        assert len(batch) == 2
        for b in batch:
            fill = sum(fed_len(s) for s in b)
            assert fill <= 128 and all(fed_len(s) <= input_len for s in b)
            if input_len == 16:  # every piece is 16 tokens: rows fill exactly
                assert fill == 128
            if input_len == 32:
                assert fill >= 0.9 * 128
    per_row = [len(b) for _, batch in out for b in batch]
    assert min(per_row[:8]) > max(per_row[-8:])  # a short level packs more examples per row


def test_full_level_packs_as_densely_as_axolotl():
    from axolotl.utils.samplers.multipack import MultipackBatchSampler
    from torch.utils.data import RandomSampler

    plan = make_plan(make_rows(n=2000))
    out = run_epoch(plan, [128], n_batches=200, per_step=4)
    used = sum(fed_len(s) for _, batch in out for b in batch for s in b)
    axolotl = MultipackBatchSampler(RandomSampler(range(2000)), batch_size=2, batch_max_len=128,
                                    lengths=plan.rows.lengths, bin_size=200, num_processes=1)
    assert used / (200 * 2 * 128) >= axolotl.efficiency() - 0.02


def test_unpacked_budgets():
    rows = make_rows(low=64, high=65)  # every row 64 tokens
    examples = run_epoch(make_plan(rows, packed=False, budget="examples"), [16, 64])
    assert [len(b) for _, b in examples] == [4] * 24
    tokens = run_epoch(make_plan(rows, packed=False, budget="tokens"), [16, 64])
    assert [len(b) for _, b in tokens] == [16] * 4 + [4] * 20  # 4 x 64 tokens per batch
    seen = [s[0] for _, b in tokens for s in b]
    assert len(seen) == len(set(seen))


def test_packed_examples_budget_keeps_the_examples_per_row():
    rows = make_rows()
    plan = make_plan(rows, budget="examples")
    out = run_epoch(plan, [16] * 3 + [128] * 3)
    short = [len(b) for _, batch in out[:12] for b in batch]
    full = [len(b) for _, batch in out[12:] for b in batch]
    assert abs(np.mean(short) - np.mean(full)) < 1.0  # same examples per row, fewer tokens
    for _, batch in out[:12]:
        for b in batch:  # packed by full length, fed cut
            assert sum(int(rows.lengths[s[0]]) for s in b) <= 128
            assert all(fed_len(s) <= 16 for s in b)


def test_rows_without_a_scored_label_are_skipped_and_counted():
    rows = Rows(np.full(50, 40), np.where(np.arange(50) % 2 == 0, 1, 30))
    plan = BatchPlan(rows, batch_size=2, seed=0, shuffle=False, budget="examples")
    cuts = level_cuts(rows, 16, "head", prompt_cut="none")
    [(stats, batches)] = list(plan.epoch(0, 5, 5, lambda k: cuts))
    assert [s[0] for b in batches for s in b] == list(range(0, 20, 2))
    assert stats["skipped_no_label"] == 9 and stats["examples"] == 10
    assert stats["tokens"] == 160 and stats["tokens_cut"] == 10 * 24


def test_filter_feeds_every_row_once_at_or_after_its_level():
    rows = make_rows(n=400, low=10, high=120)
    plan = make_plan(rows, packed=False, budget="examples")
    schedule = [32] * 2 + [64] * 3 + [128] * 35
    levels = {L: level_cuts(rows, L, "filter", last_level=L == 128) for L in set(schedule)}
    fed = []
    for k, (stats, batches) in enumerate(plan.epoch(0, 400, 4, lambda k: levels[schedule[k]])):
        for batch in batches:
            for row, head, start, end in batch:
                assert (head, start, end) == (0, 0, rows.lengths[row])  # whole, never cut
                assert rows.lengths[row] <= schedule[k]
                fed.append(row)
        if k == len(schedule) - 1:
            break
    first_pass = fed[:400]
    assert sorted(first_pass) == list(range(400))  # every row once in the first 400 fed


def test_level_that_feeds_nothing_is_an_error():
    rows = Rows(np.full(10, 40), np.full(10, 30))
    plan = BatchPlan(rows, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="a level feeds 0 examples"):
        list(plan.epoch(0, 2, 1, lambda k: level_cuts(rows, 16, "head", prompt_cut="none")))
