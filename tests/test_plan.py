"""The batch plan, driven with Axolotl's real packer."""

import numpy as np
import pytest

from axolotl_curriculum.plan import NO_LABEL, BatchPlan, first_scored_label, keeps_label
from axolotl_curriculum.plugin import axolotl_pack


def flat(rows):
    offsets = np.cumsum([0] + [len(r) for r in rows])
    values = np.array([v for r in rows for v in r], dtype=np.int64)
    return offsets, values


def test_first_scored_label_skips_position_zero_and_masked():
    rows = [[5, 6, 7], [-100, -100, 9], [4, -100, -100], [], [-100] * 4, [1]]
    assert first_scored_label(*flat(rows)).tolist() == [1, 2, NO_LABEL, NO_LABEL, NO_LABEL, NO_LABEL]


def test_keeps_label_after_head_cut():
    lengths = np.array([10, 10, 10, 1])
    first = np.array([1, 6, NO_LABEL, NO_LABEL])
    assert keeps_label(lengths, first, 4).tolist() == [True, False, False, False]
    assert keeps_label(lengths, first, 8).tolist() == [True, True, False, False]


def make_plan(n=300, seed=0, packed=True, **kw):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 128, size=n)
    first = np.ones(n, dtype=np.int64)
    if packed:
        return BatchPlan(lengths, first, batch_size=2, seed=seed, capacity=128, bin_size=200,
                         pack=axolotl_pack, **kw)
    return BatchPlan(lengths, first, batch_size=4, seed=seed, **kw)


def run_epoch(plan, schedule, n_batches=24, per_step=4, epoch=0):
    return list(plan.epoch(epoch, n_batches, per_step, lambda k: schedule[min(k, len(schedule) - 1)]))


def test_packed_rows_stay_full_and_respect_the_level():
    plan = make_plan()
    out = run_epoch(plan, [16, 16, 32, 32, 128, 128])
    assert len(out) == 24
    for i, (input_len, batch) in enumerate(out):
        assert input_len == [16, 16, 32, 32, 128, 128][i // 4]
        assert len(batch) == 2
        for b in batch:
            fill = sum(min(plan.lengths[j], input_len) for j in b)
            assert fill <= 128
            if input_len == 16:  # every piece is 16 tokens: rows fill exactly
                assert fill == 128
            if input_len == 32:
                assert fill >= 0.9 * 128
    short = [len(b) for L, batch in out if L == 16 for b in batch]
    long = [len(b) for L, batch in out if L == 128 for b in batch]
    assert min(short) > max(long)  # a short level packs more examples per row


def test_full_level_packs_as_densely_as_axolotl():
    from axolotl.utils.samplers.multipack import MultipackBatchSampler
    from torch.utils.data import RandomSampler

    plan = make_plan(n=2000)
    out = run_epoch(plan, [128], n_batches=200, per_step=4)
    used = sum(min(plan.lengths[j], 128) for _, batch in out for b in batch for j in b)
    axolotl = MultipackBatchSampler(RandomSampler(range(2000)), batch_size=2, batch_max_len=128,
                                    lengths=plan.lengths, bin_size=200, num_processes=1)
    assert used / (200 * 2 * 128) >= axolotl.efficiency() - 0.02


def test_same_seed_same_plan_on_every_rank():
    a = run_epoch(make_plan(), [16, 64, 128])
    b = run_epoch(make_plan(), [16, 64, 128])
    c = run_epoch(make_plan(), [16, 64, 128], epoch=1)
    assert a == b
    assert a != c


def test_no_example_repeats_within_a_pass():
    plan = make_plan(n=1000)
    out = run_epoch(plan, [64], n_batches=40)
    seen = [j for _, batch in out for b in batch for j in b]
    assert len(seen) == len(set(seen))


def test_unpacked_batches():
    plan = make_plan(packed=False)
    out = run_epoch(plan, [16, 128])
    assert all(len(batch) == 4 for _, batch in out)
    seen = [j for _, batch in out for j in batch]
    assert len(seen) == len(set(seen)) == 96


def test_examples_without_a_scored_label_are_skipped_and_counted():
    lengths = np.full(50, 40)
    first = np.where(np.arange(50) % 2 == 0, 1, 30)  # odd rows: label only after position 30
    plan = BatchPlan(lengths, first, batch_size=2, seed=0, shuffle=False)
    out = run_epoch(plan, [16], n_batches=5, per_step=1)
    fed = [j for _, batch in out for j in batch]
    assert fed == list(range(0, 20, 2))
    assert plan.stats.skipped_no_label[16] == 9
    assert plan.stats.examples[16] == 10


def test_level_that_feeds_nothing_is_an_error():
    plan = BatchPlan(np.full(10, 40), np.full(10, 30), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="input_len=16"):
        run_epoch(plan, [16], n_batches=2, per_step=1)
