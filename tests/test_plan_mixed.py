"""Mixed steps (`short_share`) where the short examples fall short of the plan, and the
pre-flight shapes of a level that keeps short data; read from the micro-batches the sampler
yields."""

import re

import numpy as np
import pytest
from datasets import Dataset

from axolotl_curriculum import CurriculumRun
from axolotl_curriculum.core.errors import CurriculumError
from axolotl_curriculum.core.cut import Rows, level_cuts
from axolotl_curriculum.core.plan import BatchPlan, Mix
from axolotl_curriculum.data.rows import row_stats
from axolotl_curriculum.integrations.plugin import axolotl_pack


def rows_of(lengths):
    dataset = Dataset.from_list([{"input_ids": [1] * n, "labels": [1] * n} for n in lengths])
    return row_stats(dataset)


def fed_len(spec):
    _, head, start, end = spec
    return head + end - start


def examples(batch, packed):
    return [s for bin_ in batch for s in bin_] if packed else list(batch)


def steps_of(run, n_steps, per_step):
    batches = list(run.make_sampler(n_steps * per_step, lambda: 0))
    return [batches[k * per_step:(k + 1) * per_step] for k in range(n_steps)]


def test_a_short_pool_smaller_than_the_share_leaves_no_micro_batch_empty():
    """Unpacked: the first level (2 rows) is skipped, so the short pool is 2 rows; a step
    wants 2 short examples of its 8, and gets fewer whenever the level's part holds a short
    row: the level's own examples fill in (was: a micro-batch of 0 examples)."""
    rows = rows_of([2, 2] + [10] * 50)
    run = CurriculumRun({"levels": [{"input_len": 2, "max_steps": 1, "truncation": "filter"},
                                    {"input_len": 16, "truncation": "head"}],
                         "short_share": 0.25, "budget": "examples"}, "/nonexistent",
                        world_size=4, grad_accum=2)
    run.use_data(rows, BatchPlan(rows, batch_size=1, seed=0, budget="examples"))
    for step in steps_of(run, 40, 8):
        assert [len(b) for b in step] == [1] * 8  # 6 own + 2 short, or own ones in their place
        fed = [s[0] for b in step for s in b]
        assert len(fed) == len(set(fed))
    short = [run.sampler.planned[k]["short_examples"] for k in range(40)]
    assert min(short) < 2 == max(short)  # some steps got fewer short examples than planned


def test_packed_a_short_pool_smaller_than_the_share_leaves_no_bin_empty():
    """Packed: 4 micro-batches of 1 packed row, 2 of them short; one short row (2 tokens) and
    long rows that fill a packed row alone: the level's own packed rows fill in (was: 3
    examples for 4 micro-batches, one of them an empty row)."""
    rows = rows_of([2] + [100] * 50)
    run = CurriculumRun({"levels": [{"input_len": 2, "max_steps": 1, "truncation": "filter"},
                                    {"input_len": 128, "truncation": "head"}],
                         "short_share": 0.5}, "/nonexistent", world_size=2, grad_accum=2)
    run.use_data(rows, BatchPlan(rows, batch_size=1, seed=0, capacity=128, bin_size=200,
                                 pack=axolotl_pack))
    for step in steps_of(run, 30, 4):
        assert all(len(b) == 1 and b[0] for b in step)  # one packed row, not empty
        fed = [s[0] for b in step for s in b[0]]
        assert len(fed) == len(set(fed)) >= 4


def test_the_short_part_gives_way_where_the_level_cannot_fill_in():
    """A step of 4 micro-batches, 2 short: the level's part draws both chunks of row 0, the
    short part the head of row 1, whose chunks the level can then not take beside it. With
    3 examples for 4 micro-batches, the short example gives way to the level's own."""
    rows = Rows(np.array([8, 8]), np.ones(2, dtype=np.int64))
    own, short = level_cuts(rows, 4, "split"), level_cuts(rows, 8, "head")
    plan = BatchPlan(rows, batch_size=1, seed=0, shuffle=False, budget="examples")
    for stats, batches in plan.epoch(0, 12, 4, lambda k: Mix(own, short, 0.5)):
        assert [len(b) for b in batches] == [1] * 4
        specs = [s for b in batches for s in b]
        assert sorted(specs) == [(0, 0, 0, 4), (0, 0, 4, 8), (1, 0, 0, 4), (1, 0, 4, 8)]
        assert stats["examples"] == 4 and stats["short_examples"] == 0
        assert stats["chunks"] == 4 and stats["tokens"] == 16


def covered(shapes, batch, plan):
    """Whether a pre-flighted shape (rows, positions per row, longest) covers the batch."""
    lengths = [fed_len(s) for s in examples(batch, plan.packed)]
    if plan.packed:
        width = max(sum(fed_len(s) for s in bin_) for bin_ in batch)
        return any(len(batch) <= r and plan.padded(width) <= t and max(lengths) <= n
                   for r, t, n in shapes)
    return any(len(batch) <= r and plan.padded(max(lengths)) <= t and max(lengths) <= n
               for r, t, n in shapes)


def test_the_preflight_shapes_hold_the_short_examples():
    """The level's own examples (4 tokens) are shorter than the first level's cuts (8): its
    micro-batches of 4 examples hold 8-token short ones (was: shapes (2, 8) and (5, 4))."""
    rows = rows_of([4] * 40 + [30] * 40)
    block = {"levels": [{"input_len": 8, "max_steps": 1, "truncation": "head"},
                        {"input_len": 16, "truncation": "filter"}],
             "short_share": 0.25, "budget": "tokens"}
    for packed in (False, True):
        pack = dict(capacity=16, bin_size=200, pack=axolotl_pack) if packed else {}
        plan = BatchPlan(rows, batch_size=1, seed=0, budget="tokens", **pack)
        run = CurriculumRun(block, "/nonexistent", world_size=4)  # packed: 1 short row of 4
        run.use_data(rows, plan)
        shapes = plan.largest_batches([run.cuts.fed(k) for k in run.levels_in_use()])
        steps = steps_of(run, 20, 4)
        longest = max(fed_len(s) for step in steps[1:] for b in step for s in examples(b, packed))
        assert longest == 8  # the level's micro-batches do hold short examples of 8
        for step in steps:
            assert all(covered(shapes, b, plan) for b in step), (packed, shapes, step)


@pytest.mark.parametrize("grad_accum, share, key, message", [
    (1, 0.25, "curriculum.short_share", "of the 1 packed row(s) a step holds rounds to none"),
    (2, 0.25, "curriculum.short_share", "to 3 packed rows a step, or short_share to more than 0.25"),
    (2, None, "curriculum.levels[1].short_share", "to 3 packed rows a step"),
])
def test_a_short_share_too_few_packed_rows_can_hold_is_refused(grad_accum, share, key, message):
    """Packed, short data is whole packed rows: 0.25 of 1 or 2 rounds to none, and the level
    would silently keep none. Refused, naming the key and the fix; 3 packed rows keep one."""
    rows = rows_of([20] * 60 + [100] * 60)
    level = {"input_len": 128} if share else {"input_len": 128, "short_share": 0.25}
    block = {"levels": [{"input_len": 32, "max_steps": 2}, level],
             **({"short_share": share} if share else {})}

    def use(accum):
        run = CurriculumRun(block, "/nonexistent", grad_accum=accum)
        run.use_data(rows, BatchPlan(rows, batch_size=1, seed=0, capacity=128, bin_size=200,
                                     pack=axolotl_pack))
        return run

    with pytest.raises(CurriculumError, match=re.escape(f"{key}: 0.25 of the {grad_accum} "
                                                        "packed row(s)")) as err:
        use(grad_accum)
    assert message in str(err.value)
    run = use(3)
    level_1 = [s for step in steps_of(run, 6, 3)[2:] for b in step for s in b[0]]
    assert any(s[0] >= 60 and fed_len(s) == 32 for s in level_1)  # a long row cut short
