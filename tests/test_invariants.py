"""The data path's invariants (docs/design.md), over random configurations.

Every configuration runs the real pieces: Arrow row statistics of a real `datasets.Dataset`
(sliced, sharded or index-mapped), the run's level checks, the loader's batch sampler with
Axolotl's packer, and accelerate's own `BatchSamplerShard` for every process index. What was fed
is read from the micro-batches each rank receives; the order's draws are recorded from outside.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axolotl_curriculum.core.plan import BatchPlan
from axolotl_curriculum.data.rows import difficulty_scores, row_stats
from axolotl_curriculum.integrations.plugin import axolotl_pack
from axolotl_curriculum.run.run import CurriculumRun

VOCAB = 40
CAPACITY = 160
# CI runs a fixed set of 150 configurations; INVARIANT_EXAMPLES=2000 searches fresh ones.
DEEP = int(os.environ.get("INVARIANT_EXAMPLES", 0))
SETTINGS = settings(max_examples=DEEP or 150, deadline=None, derandomize=not DEEP,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- a dataset and its slow, row-by-row reference ---------------------------------------------

@st.composite
def datasets_(draw):
    n = draw(st.integers(4, 300))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    long_tail = draw(st.booleans())
    lengths = (np.minimum(rng.pareto(1.2, n) * 20 + 1, 150) if long_tail
               else rng.integers(0, 150, n)).astype(int)
    rows = []
    for length in lengths:
        prompt = int(rng.integers(0, length + 1)) if rng.random() < 0.6 else 0
        labels = [-100] * prompt + rng.integers(0, VOCAB, length - prompt).tolist()
        if rng.random() < 0.05:  # a row with no trainable token at all
            labels = [-100] * length
        rows.append({"input_ids": rng.integers(0, VOCAB, length).tolist(), "labels": labels})
    dataset = Dataset.from_list(rows)
    view = draw(st.sampled_from(["whole", "slice", "shard", "indices", "skip"]))
    if view == "slice" and n > 2:
        dataset = dataset.select(range(n // 3, n))  # contiguous: a sliced Arrow table
    elif view == "shard":
        dataset = dataset.shard(2, 1, contiguous=True)
    elif view == "indices":
        dataset = dataset.select(rng.permutation(n)[: max(4, n // 2)].tolist())  # index mapping
    elif view == "skip" and n > 2:
        dataset = dataset.skip(n // 4)
    return dataset, seed


def reference_rows(dataset, is_boundary):
    """Per row, by reading `dataset[i]`: length, first scored label position, boundaries."""
    out = []
    for i in range(len(dataset)):
        row = dataset[i]
        scored = [p for p, label in enumerate(row["labels"]) if label != -100 and p > 0]
        out.append((len(row["input_ids"]), scored[0] if scored else None,
                    [p for p, t in enumerate(row["input_ids"]) if is_boundary[t]]))
    return out


@SETTINGS
@given(datasets_())
def test_row_statistics_equal_a_row_by_row_reference(data):
    dataset, seed = data
    is_boundary = np.random.default_rng(seed).random(VOCAB) < 0.2
    rows = row_stats(dataset, is_boundary)
    for i, (length, first, bounds) in enumerate(reference_rows(dataset, is_boundary)):
        assert rows.lengths[i] == length
        assert (rows.first_label[i] if rows.first_label[i] < length else None) == first
        lo, hi = np.searchsorted(rows.boundaries, [rows.starts[i], rows.starts[i] + length])
        assert (rows.boundaries[lo:hi] - rows.starts[i]).tolist() == bounds


# -- a training configuration -----------------------------------------------------------------

@st.composite
def configs(draw, short: bool = False):
    """A random block and run; `short`: later levels keep short data (`short_share`)."""
    dataset, seed = draw(datasets_())
    n_levels = draw(st.integers(2 if short else 1, 4))
    lens = sorted(draw(st.lists(st.integers(2, CAPACITY), min_size=n_levels, max_size=n_levels,
                                unique=True)))
    modes = ["head", "segment", "filter", "split"]
    levels = [{"input_len": n, "max_steps": draw(st.integers(1, 8)),
               "truncation": draw(st.sampled_from(modes))} for n in lens]
    del levels[-1]["max_steps"]
    if draw(st.booleans()):  # a difficulty score admits a growing easiest share
        shares = sorted(draw(st.lists(st.floats(0.2, 1.0), min_size=n_levels - 1,
                                      max_size=n_levels - 1)))
        for level, share in zip(levels, shares):
            level["admit"] = round(share, 3)
    block_share = 0.0
    if short:  # every later level keeps short data, some at a share of their own
        block_share = draw(st.sampled_from([0.1, 0.25, 0.5]))
        for level in levels[1:]:
            if draw(st.booleans()):
                level["short_share"] = draw(st.sampled_from([0.0, 0.2, 0.4, 0.9]))
    block = {"levels": levels, "prompt_cut": draw(st.sampled_from(["left", "none"])),
             "short_share": block_share,
             "keep_prompt_head": draw(st.integers(0, 3)),
             "budget": draw(st.sampled_from(["tokens", "examples"]))}
    if any("admit" in level for level in levels):
        block["difficulty"] = {"score": draw(st.sampled_from(["random", "rarity", "length"])),
                               "seed": draw(st.integers(0, 3))}
    world, accum = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    packed = draw(st.booleans())
    batch_size = draw(st.integers(1, 3))
    steps_per_epoch = draw(st.integers(1, 12))
    # decisions a gate could have taken: an advance, or a back-off for a few steps
    switches = draw(st.lists(st.tuples(st.integers(1, 30), st.integers(0, n_levels - 1),
                                       st.one_of(st.none(), st.integers(1, 5))), max_size=3))
    return dict(dataset=dataset, seed=seed, block=block, world=world, accum=accum, packed=packed,
                batch_size=batch_size, steps_per_epoch=steps_per_epoch, epochs=draw(st.integers(1, 2)),
                switches=sorted(switches, key=lambda s: s[0]), truncate=draw(st.booleans()),
                shuffle=draw(st.booleans()))


class Recorder:
    """Wraps the plan's example order from outside: which step drew each row, and how often.

    The sampler plans a step (drawing its rows) before it yields the step's first micro-batch,
    so the step drawing a row is the number of micro-batches yielded so far // per step.
    A split level's order draws its units (a chunk, or a row it does not split): each draw is
    kept under its row as (step, the order's key, the example the unit is, None if not fed);
    a row order's draws as (step, None, None)."""

    def __init__(self, plan, per_step):
        self.draws: dict[int, list[tuple]] = {}
        self.yielded = None
        order = plan.order

        self.short_draws: dict[int, list[tuple]] = {}

        def recorded(epoch, cuts=None, short=False):
            draws = self.short_draws if short else self.draws
            units = cuts is not None and cuts.row_of is not None
            key = cuts.space_key if units else None
            for unit in order(epoch, cuts, short):
                if self.yielded is not None:
                    spec = cuts.spec(unit) if units else None
                    row = spec[0] if units else unit
                    fed = spec if units and cuts.fed[unit] else None
                    draws.setdefault(row, []).append((len(self.yielded) // per_step, key, fed))
                yield unit

        plan.order = recorded


def build(cfg, switches=True):
    dataset = cfg["dataset"]
    is_boundary = np.random.default_rng(cfg["seed"]).random(VOCAB) < 0.2
    rows = row_stats(dataset, is_boundary)
    run = CurriculumRun(cfg["block"], "/nonexistent", world_size=cfg["world"],
                        grad_accum=cfg["accum"], truncate_excess=cfg["truncate"])
    if cfg["packed"]:
        plan = BatchPlan(rows, batch_size=cfg["batch_size"], seed=cfg["seed"], capacity=CAPACITY,
                         bin_size=200, pack=axolotl_pack, budget=cfg["block"]["budget"],
                         shuffle=cfg["shuffle"])
    else:
        plan = BatchPlan(rows, batch_size=cfg["batch_size"], seed=cfg["seed"],
                         budget=cfg["block"]["budget"], shuffle=cfg["shuffle"])
    scores = None
    if run.curriculum.difficulty is not None:
        scores = difficulty_scores(dataset, run.curriculum.difficulty, is_boundary)
    try:
        run.use_data(rows, plan, scores=scores)
    except ValueError as err:  # refused before training:
        if "packed row(s) a step holds rounds to none" in str(err):
            # a short share too few packed rows can hold (the slow reference: round(share x rows))
            n_bins = cfg["batch_size"] * cfg["world"] * cfg["accum"]
            shares = [run.curriculum.short_share_of(k)
                      for k in range(1, len(run.curriculum.levels))]
            assert cfg["packed"] and any(0 < v and (n_bins < 2 or v * n_bins <= 0.5)
                                         for v in shares), (n_bins, shares)
            return None
        # a level that cannot fill one step
        assert "fewer than the" in str(err) and "micro-batches" in str(err)
        return None
    if switches:
        apply_switches(run, cfg["switches"])
    return run


def apply_switches(run, switches):
    """Decisions a gate took (advances, back-offs), in order of their first step."""
    for start, level, cap in switches:
        if run.timeline.max_steps[level] != 0 and start >= run.timeline.segments[-1].start:
            run.timeline.switch(start, level, cap)


def cut_specs(cuts, chunks_only=False) -> set:
    """Every example a level's cuts can feed, as the sampler yields it (`chunks_only`: those
    that are a chunk of a row the level splits)."""
    units = np.flatnonzero(cuts.fed & cuts.chunks if chunks_only else cuts.fed)
    rows = cuts.row_of[units] if cuts.row_of is not None else units
    return set(zip(rows.tolist(), cuts.head[units].tolist(), cuts.start[units].tolist(),
                   cuts.end[units].tolist()))


def fed_length(spec):
    _, head, start, end = spec
    return head + end - start


def has_scored_label(labels, spec):
    _, head, start, end = spec
    kept = labels[:head] + labels[start:end]
    return any(label != -100 for label in kept[1:])


@SETTINGS
@given(configs())
def test_every_configuration_keeps_the_invariants(cfg):
    check_invariants(cfg)


@SETTINGS
@given(configs(short=True))
def test_levels_that_keep_short_data_keep_the_invariants(cfg):
    """An example (a row; with split, a chunk of a row) is fed once per step, long or short,
    and no short example shares a row with the level's own; every short example is the first
    level's cut of its row; the counts and the pre-flighted shapes include the short
    examples."""
    check_invariants(cfg)


def check_invariants(cfg):
    run = build(cfg)
    if run is None:
        return
    world, per_step = cfg["world"], cfg["world"] * cfg["accum"]
    step_now = [0]
    sampler = run.make_sampler(cfg["steps_per_epoch"] * per_step + per_step - 1, lambda: step_now[0])
    recorder = Recorder(run.plan, per_step)
    dataset, rows = cfg["dataset"], run.rows
    labels = dataset["labels"]
    largest = run.plan.largest_batches([run.cuts.fed(k) for k in run.levels_in_use()])
    feeds: dict[int, list[tuple]] = {}  # per row: (step, example) of each feed
    specs_of: dict = {}  # per level: (its examples, those a chunk of a split row)

    def examples_of(level):
        if level not in specs_of:
            cuts = run.cuts(level)
            specs_of[level] = cut_specs(cuts), cut_specs(cuts, chunks_only=True)
        return specs_of[level]
    for epoch in range(cfg["epochs"]):
        step_now[0] = epoch * sampler.steps_per_epoch
        global_batches = recorder.yielded = []
        recorder.draws, recorder.short_draws = {}, {}
        for batch in sampler:
            global_batches.append(batch)
        recorder.yielded = None
        first_step = epoch * sampler.steps_per_epoch
        # sharded with accelerate's class, for every process index
        shards = [list(BatchSamplerShard(sampler, world, p, even_batches=False)) for p in range(world)]
        assert len(global_batches) == sampler.n_batches
        for p, mine in enumerate(shards):
            assert len(mine) == len(global_batches) // world  # same count on every rank
            assert mine == global_batches[p::world]  # nothing dropped, nothing moved
        for k in range(sampler.steps_per_epoch):
            step = first_step + k
            level = run.timeline.level_at(step)
            input_len = run.curriculum.input_lens[level]
            mode = run.curriculum.truncation_of(level)
            batches = global_batches[k * per_step:(k + 1) * per_step]
            specs = [s for b in batches for s in (sum(b, []) if run.plan.packed else b)]
            assert all(batches), "every micro-batch holds an example"
            assert len(specs) == len(set(specs)), "an example fed twice in a step"
            (own, own_chunks), (first, first_chunks) = examples_of(level), examples_of(0)
            mixed = run.curriculum.short_share_of(level) > 0
            # a row twice in a step only as chunks of one stream's split: two chunks of it
            # from the level's own cuts, or two short ones; never a short example beside one
            # of the level's own
            streams = [own_chunks] + ([first_chunks] if mixed else [])
            of_row: dict[int, list] = {}
            for spec in specs:
                of_row.setdefault(spec[0], []).append(spec)
            for row, its in of_row.items():
                assert len(its) == 1 or any(set(its) <= chunks for chunks in streams), \
                    ("a row twice in a step, not as chunks of one split", level, its)
            for spec in specs:
                assert 2 <= fed_length(spec) <= input_len
                assert has_scored_label(labels[spec[0]], spec)
                # the level's own cut, or (keeping short data) the first level's
                assert spec in own or (mixed and spec in first), (spec, level)
                if (mode == "filter" and spec not in first
                        and not (level == run.timeline.last_level and cfg["truncate"])):
                    assert spec[1:] == (0, 0, rows.lengths[spec[0]]), "filter feeds whole rows"
                if run.scores is not None:  # only what the level admits, easiest first
                    share = run.curriculum.admit_of(level)
                    rank = int((run.scores < run.scores[spec[0]]).sum())
                    assert rank < round(share * len(rows)), "fed before its level admits it"
            for b in batches:  # within the pre-flighted shapes (rows, positions, longest)
                if run.plan.packed:
                    assert all(b), "every packed row holds an example"
                    assert len(b) <= run.plan.batch_size
                    assert all(sum(fed_length(s) for s in bin_) <= CAPACITY for bin_ in b)
                    assert max(fed_length(s) for bin_ in b for s in bin_) <= largest[0][2]
                else:
                    longest = max(fed_length(s) for s in b)
                    assert any(len(b) <= r and longest <= t and longest <= n
                               for r, t, n in largest)
            stats = sampler.planned.pop(step)
            lengths = [fed_length(s) for s in specs]
            assert stats["examples"] == len(specs)
            assert stats["tokens"] == sum(lengths)
            # a chunk is a whole unit: no token cut, not prompt-cut. A spec both a chunk of one
            # stream's split and a cut of the other's (a segment ending where a chunk does)
            # may be either: the counts lie between
            cut, prompt, chunks = [0, 0], [0, 0], [0, 0]
            for s, n in zip(specs, lengths):
                kinds = {s in own_chunks} if s in own else set()
                if mixed and s in first:
                    kinds.add(s in first_chunks)
                for lo_hi, is_chunk in ((0, min(kinds)), (1, max(kinds))):
                    cut[lo_hi] += 0 if is_chunk else int(rows.lengths[s[0]]) - n
                    prompt[lo_hi] += int(not is_chunk and bool(s[1] or s[2]))
                    chunks[lo_hi] += int(is_chunk)
            assert min(cut) <= stats["tokens_cut"] <= max(cut)
            assert min(prompt) <= stats["prompt_cut"] <= max(prompt)
            assert chunks[0] <= stats["chunks"] <= chunks[1]
            not_own = [s for s in specs if s not in own]  # short for sure (the rest may be too)
            assert len(not_own) <= stats["short_examples"] <= (len(specs) - 1 if mixed else 0)
            assert stats["short_tokens"] >= sum(fed_length(s) for s in not_own)
            for spec in specs:
                feeds.setdefault(spec[0], []).append((k, spec))
        # every feed answers a draw of that row from the order (no copies are made up), and
        # a row every level feeds is fed within a bound of its draw (`check_waits`): nothing is
        # lost, only the epoch's last steps may leave draws unfed (held rows are not carried to
        # the next). A split level draws its units in an order of their own: a unit drawn is
        # fed as itself, unless the steps draw from another order meanwhile (its leftovers are
        # dropped at the switch; the rows' order keeps its own for the next level that draws
        # rows).
        for row in feeds:
            drawn = recorder.draws.get(row, []) + recorder.short_draws.get(row, [])
            assert len(feeds[row]) <= len(drawn), f"row {row} fed more often than drawn"
        check_waits(run, cfg, recorder, feeds, first_step, sampler.steps_per_epoch,
                    examples_of(0)[0])
        last_feeds, feeds = feeds, {}
    return run, recorder, last_feeds


def check_waits(run, cfg, recorder, feeds, first_step, n_steps, first_specs):
    """A row drawn (a split level: a unit) that is not fed in its step joins the held rows;
    packed, once left out of two steps it goes in first, oldest first, and every step feeds at
    least as many held rows as the level's own packed rows (each can open a bin): a row drawn
    at step d is fed by step d + 2 + A // b, A: the rows held before it, b: the fewest packed
    rows of the level's own a step gets (unpacked: examples; one at least).

    A is bounded from outside: the draws of other rows at step d or earlier (of the same
    order) that some step feeds (a waiting row queues by the step it began to wait) and that
    no feed of the level's own answered by step d + 1. A feed that
    may have been a short one (a mixed level, the first level's cut, a row the short order
    drew) answers nothing: that only loosens the bound."""
    per_step, last = cfg["world"] * cfg["accum"], n_steps - 1
    levels = [run.timeline.level_at(first_step + k) for k in range(n_steps)]
    keys = [run.cuts(level).space_key for level in levels]
    shares = [run.curriculum.short_share_of(level) for level in levels]
    bins = per_step * cfg["batch_size"]
    if cfg["packed"]:  # the level's own packed rows: all but round(share x rows), at most
        own_part = [bins - (min(int(round(sh * bins)), bins - 1) if sh > 0 else 0)
                    for sh in shares]
    else:
        own_part = [1 if sh > 0 else per_step for sh in shares]
    short_drawn = {row: min(s for s, *_ in d) for row, d in recorder.short_draws.items()}
    fed_by = [run.cuts(level).fed for level in levels]
    # the rows every level that draws rows (not a split level's units) feeds
    row_levels = [run.cuts(k).fed for k in run.levels_in_use() if run.cuts(k).row_of is None]
    always = np.logical_and.reduce(row_levels) if row_levels else np.zeros(len(run.rows), bool)

    def own(row, step, spec):  # a feed of the level's own for sure
        return not (shares[step] > 0 and spec in first_specs
                    and short_drawn.get(row, n_steps) <= step)

    draws = []  # (row, step, key, spec, entered, answered)
    for row, drawn in recorder.draws.items():
        fed = feeds.get(row, [])
        for d, key, spec in drawn:
            if key is None:  # held or waiting from its draw on, if some step feeds it
                fed_later = any(keys[s] is None and fed_by[s][row] for s in range(d, n_steps))
                entered = d if fed_later else n_steps
            else:
                entered = d if spec is not None else n_steps
            answered = min((f for f, s in fed if f >= d and keys[f] == key and own(row, f, s)
                            and (key is None or s == spec)), default=n_steps)
            draws.append((row, d, key, spec, entered, answered))
    of_key = {}  # per order: its draws' (entered, answered)
    for _, _, key, _, e, a in draws:
        of_key.setdefault(key, []).append((e, a))
    of_key = {key: np.asarray(ea).reshape(-1, 2) for key, ea in of_key.items()}
    for row, d, key, spec, e, a in draws:
        if not ((key is None and always[row]) or (key is not None and spec is not None)):
            continue
        entered, answered = of_key[key].T
        ahead = int(((entered <= d) & (answered > d + 1)).sum()) - int(e <= d < a - 1)
        b = min(own_part[d + 2:] or [per_step])
        bound = 2 + ahead // b
        if d + bound > last or any(k != key for k in keys[d:d + bound + 1]):
            continue  # the epoch ends first, or the steps draw from another order meanwhile
        assert any(d <= f <= d + bound and (key is None or s == spec)
                   for f, s in feeds.get(row, [])), (row, d, bound, feeds.get(row))


@SETTINGS
@given(configs(), st.integers(0, 40))
def test_a_resumed_loader_replays_the_same_steps(cfg, resume_at):
    """HF resumes mid-epoch by iterating the epoch again and skipping the trained batches.

    The decisions taken before the checkpoint (switches starting at or before it) reach the
    resumed run only through the checkpoint: it starts from a bare timeline, loads the state
    (as JSON, through `load_state_dict`) and then takes the later decisions again. Its batches
    from the checkpoint on must be the uninterrupted loader's, which saw every decision."""
    whole_run = build(cfg)
    if whole_run is None:
        return
    per_step = cfg["world"] * cfg["accum"]
    n_batches = cfg["steps_per_epoch"] * per_step
    resume_at %= cfg["steps_per_epoch"] * cfg["epochs"]
    before = [s for s in cfg["switches"] if s[0] <= resume_at]
    later = [s for s in cfg["switches"] if s[0] > resume_at]
    step_a = [0]
    a = whole_run.make_sampler(n_batches, lambda: step_a[0])
    epoch = resume_at // a.steps_per_epoch
    step_a[0] = epoch * a.steps_per_epoch
    whole = list(a)
    # the interrupted run: it took the earlier decisions, then saved its state at resume_at
    interrupted = build(cfg, switches=False)
    apply_switches(interrupted, before)
    interrupted.make_sampler(n_batches, lambda: resume_at)
    saved = json.loads(json.dumps(interrupted.state_dict(resume_at)))
    resumed = build(cfg, switches=False)
    resumed.load_state_dict(saved, resume_at)
    apply_switches(resumed, later)
    b = resumed.make_sampler(n_batches, lambda: resume_at)
    skipped = (resume_at - epoch * b.steps_per_epoch) * per_step
    replayed = list(b)
    assert len(replayed) == len(whole)
    assert replayed[skipped:] == whole[skipped:]
    assert set(b.planned) == set(range(resume_at, (epoch + 1) * b.steps_per_epoch))
    assert all(b.planned[s] == a.planned[s] for s in b.planned)
    # and what each rank receives from accelerate's shard of the resumed loader
    for p in range(cfg["world"]):
        b_shard = list(BatchSamplerShard(b, cfg["world"], p, even_batches=False))
        assert b_shard[skipped // cfg["world"]:] == whole[skipped:][p::cfg["world"]]


# -- filter mode: waiting rows are fed or counted as never fitting ------------------------------

def test_filter_rows_that_never_fit_are_counted():
    rng = np.random.default_rng(0)
    lengths = rng.integers(4, 120, 300)
    dataset = Dataset.from_list([{"input_ids": [1] * n, "labels": [1] * n} for n in lengths])
    run = CurriculumRun({"levels": [{"input_len": 32, "max_steps": 3}, {"input_len": 64}],
                         "truncation": "filter"}, "/nonexistent")
    rows = row_stats(dataset)
    run.use_data(rows, BatchPlan(rows, batch_size=4, seed=0, budget="examples"))
    sampler = run.make_sampler(200, lambda: 0)
    fed = Counter(s[0] for b in sampler for s in b)
    stats = [sampler.planned[k] for k in range(200)]
    too_long = set(np.flatnonzero(lengths > 64).tolist())
    assert not too_long & set(fed)
    # every pass meets each too-long row once: counted each time, at the level that rejects it
    assert sum(s["skipped_too_long"] for s in stats) >= len(too_long)
    assert sum(s["skipped_too_long"] for s in stats[:3]) == 0  # level 0 lets them wait
    assert stats[-1]["waiting"] == 0
    assert set(fed) == set(range(300)) - too_long  # every other row was fed


def test_a_step_larger_than_the_admitted_rows_feeds_each_once():
    """A filter level admitting few rows: the step is smaller, never doubled (was: 3 copies)."""
    lengths = np.array([10] * 5 + [100] * 200)
    dataset = Dataset.from_list([{"input_ids": [1] * n, "labels": [1] * n} for n in lengths])
    run = CurriculumRun({"levels": [{"input_len": 16, "max_steps": 4}, {"input_len": 128}],
                         "truncation": "filter"}, "/nonexistent", world_size=2, grad_accum=2)
    rows = row_stats(dataset)
    run.use_data(rows, BatchPlan(rows, batch_size=2, seed=0, capacity=128, bin_size=200,
                                 pack=axolotl_pack))
    sampler = run.make_sampler(40, lambda: 0)
    batches = list(sampler)
    for k in range(4):
        fed = [s[0] for b in batches[4 * k:4 * k + 4] for bin_ in b for s in bin_]
        assert sorted(fed) == [0, 1, 2, 3, 4]  # all five, once each, over the 4 micro-batches


def test_a_level_smaller_than_a_step_is_refused_or_skipped():
    lengths = np.array([10] * 3 + [100] * 50)
    dataset = Dataset.from_list([{"input_ids": [1] * n, "labels": [1] * n} for n in lengths])
    rows = row_stats(dataset)
    for mode, skipped in (("filter", True), ("head", False)):
        block = {"levels": [{"input_len": 16, "max_steps": 4}, {"input_len": 128}],
                 "truncation": mode, "prompt_cut": "none"}
        run = CurriculumRun(block, "/nonexistent", world_size=4)
        if skipped:
            run.use_data(rows, BatchPlan(rows, batch_size=1, seed=0))
            assert run.levels_in_use() == [1]
        else:
            dataset2 = Dataset.from_list([{"input_ids": [1] * 20, "labels": [-100] * 18 + [1, 1]}] * 3)
            rows2 = row_stats(dataset2)
            with pytest.raises(ValueError, match=r"curriculum.levels\[0\].input_len: 0 examples"):
                run.use_data(rows2, BatchPlan(rows2, batch_size=1, seed=0))


@pytest.mark.parametrize("short_share", [0.0, 0.5])
def test_held_rows_are_fed_oldest_first_when_a_level_admits_many(short_share):
    """Packed, rows of 60-130 tokens in 160-token bins (one or two a bin): at step 4 the next
    level admits the other half of the rows at once, more than its steps pack (with
    short_share its own part of the packed rows halves too). Held rows go in oldest first,
    rows admitted by the step they began to wait: every draw is fed within `check_waits`'
    bound, and each step feeds the oldest overdue draws (was: longest first, a row drawn at
    step 2 or 3 fed at step 10 or 11, behind larger rows held later)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(60, 130, 80)
    dataset = Dataset.from_list([{"input_ids": rng.integers(0, VOCAB, n).tolist(),
                                  "labels": rng.integers(0, VOCAB, n).tolist()} for n in lengths])
    result = check_invariants(dict(
        dataset=dataset, seed=0, world=1, accum=2, packed=True, batch_size=3, steps_per_epoch=12,
        epochs=1, switches=[], truncate=False, shuffle=False,
        block={"levels": [{"input_len": 148, "max_steps": 4, "admit": 0.5}, {"input_len": 156}],
               "short_share": short_share, "budget": "tokens", "difficulty": {"score": "random"}}))
    if short_share == 0:
        check_oldest_first(*result, bins=6, n_steps=12)


def check_oldest_first(run, recorder, feeds, bins, n_steps):
    """Packed, one order, one pass, no short part: at every step the `bins` oldest overdue
    draws (two steps old or more, answered at this step or later, of rows the step's level
    feeds; oldest by their step, ties longest first) are fed in it: each can open a packed
    row. A feed answers its row's earliest draw not answered yet; a draw never answered (the
    pass ended, or a waiting row drawn again) is left out."""
    pending = []  # (draw step, feed step, row)
    for row, fs in feeds.items():
        draws = sorted(d for d, *_ in recorder.draws[row])
        for f in sorted(f for f, _ in fs):
            d = next(d for d in draws if d <= f)
            draws.remove(d)
            pending.append((d, f, row))
    for t in range(n_steps):
        cuts = run.cuts(run.timeline.level_at(t))
        overdue = [(d, -int(cuts.lengths[r]), f, r) for d, f, r in pending
                   if t - d >= 2 and f >= t and cuts.fed[r]]
        oldest = sorted(overdue)[:bins]
        assert all(f == t for _, _, f, _ in oldest), (t, oldest)
