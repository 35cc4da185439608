"""`truncation: split`: a row longer than the level is fed as consecutive chunks, each its own
example. The witness is the token itself: every row's ids are unique (row r, position p holds a
token naming both), so what the loader hands the collator says which tokens of which row were
fed, with no help from the plan."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from datasets import Dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axolotl_curriculum import CurriculumRun
from axolotl_curriculum.integrations.plugin import axolotl_pack

WIDTH = 10_000  # token = row * WIDTH + position: unique, and it names its row and position


def dataset(lengths, prompts):
    rows = []
    for r, (n, p) in enumerate(zip(lengths, prompts)):
        ids = [r * WIDTH + i for i in range(n)]
        rows.append({"input_ids": ids, "labels": [-100] * p + ids[p:]})
    return Dataset.from_list(rows)


def fed_examples(loader, packed):
    """Per optimizer step (one micro-batch each here), the examples as (row, positions)."""
    steps = []
    for batch in loader:
        examples = [e for b in batch for e in b] if packed else batch
        steps.append([(e["input_ids"][0] // WIDTH, [t % WIDTH for t in e["input_ids"]],
                       e["labels"]) for e in examples])
    return steps


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_split_feeds_every_token_of_a_trained_row_once_per_pass(data, tmp_path_factory):
    n = data.draw(st.integers(6, 24))
    lengths = data.draw(st.lists(st.integers(2, 200), min_size=n, max_size=n))
    prompts = [0 if data.draw(st.booleans()) or length < 4 else data.draw(st.integers(1, length - 2))
               for length in lengths]
    input_len = data.draw(st.integers(2, 64))
    packed = data.draw(st.booleans())
    ds = dataset(lengths, prompts)
    run = CurriculumRun({"truncation": "split", "budget": "examples",
                         "levels": [{"input_len": input_len}]}, tmp_path_factory.mktemp("split"))
    shape = dict(pack=axolotl_pack, capacity=max(64, input_len), bin_size=400) if packed else {}
    batch = 1 if packed else 4
    # how many examples one pass holds: each trained row's chunks, one per other row
    # (a prompt of one token is none: position 0's label is never scored anyway)
    splits = [p <= 1 and length > input_len for length, p in zip(lengths, prompts)]
    units = sum(-(-length // input_len) - (input_len == 2 and length % 2) if s else 1
                for length, s in zip(lengths, splits))  # (with input_len 2 an odd tail: none)
    try:
        steps = -(-2 * units // batch)  # two passes at least (fewer when packed)
        loader = run.train_loader(ds, lambda b: b, batch_size=batch, n_batches=steps,
                                  max_steps=steps, **shape)
    except ValueError as err:  # a level no row can fill: refused before training
        assert "fewer than the" in str(err)
        return
    steps = fed_examples(loader, packed)
    fed = [e for step in steps for e in step]
    for row, positions, labels in fed:
        assert len(positions) <= input_len
        assert positions == list(range(positions[0], positions[0] + len(positions))) or prompts[row]
        assert any(label != -100 for label in labels[1:]), "a chunk with no trained token"
    # one pass (unpacked: the first `units` examples) feeds every token of every split row once
    counts = Counter((row, p) for row, positions, _ in (fed[:units] if not packed else fed)
                     for p in positions if splits[row])
    for row, s in enumerate(splits):
        if not s:
            continue
        # with input_len 2, an odd row's last token is a one-token chunk: it trains nothing
        dropped = input_len == 2 and lengths[row] % 2 == 1
        seen = [counts[row, p] for p in range(lengths[row] - dropped)]
        if packed:  # leftovers may carry a chunk past its pass: every token fed, in every pass
            assert min(seen) >= 1, (row, seen)
        else:
            assert seen == [1] * len(seen), (row, seen)
    # the chunks fed are exactly the row's consecutive pieces of input_len (the last shorter,
    # a one-token tail given a token by the piece before), whatever the order or packing
    for row, s in enumerate(splits):
        if not s:
            continue
        n, edges = lengths[row], list(range(0, lengths[row], input_len)) + [lengths[row]]
        if n % input_len == 1 and input_len > 2:
            edges[-2] -= 1
        want = {(a, b - a) for a, b in zip(edges, edges[1:]) if b - a >= 2}
        assert {(p[0], len(p)) for r, p, _ in fed if r == row} == want, row
    assert [sum(len(e[1]) for e in step) for step in steps]  # every step fed something


def test_split_is_counted_in_the_summary_and_rows_with_a_prompt_are_cut_at_their_head(tmp_path):
    lengths, prompts = [250, 100, 40, 130], [0, 0, 0, 30]
    ds = dataset(lengths, prompts)
    run = CurriculumRun({"truncation": "split", "budget": "examples",
                         "levels": [{"input_len": 64}]}, tmp_path)
    loader = run.train_loader(ds, lambda b: b, batch_size=1, n_batches=8, max_steps=8)
    fed = [e for step in fed_examples(loader, False) for e in step]
    by_row = {}
    for row, positions, _ in fed:
        by_row.setdefault(row, []).append((positions[0], len(positions)))
    assert sorted(by_row[0]) == [(0, 64), (64, 64), (128, 64), (192, 58)]
    assert sorted(by_row[1]) == [(0, 64), (64, 36)]
    assert by_row[2] == [(0, 40)]
    assert by_row[3] == [(0, 64)]  # a prompt: one head cut, as truncation: head feeds it
    for g in range(1, 9):
        run.on_step_end(g)
    level = run.summary()["levels"][0]
    assert level["global_chunks"] == 6 and level["global_examples"] == 8
    assert level["global_tokens_cut"] == 130 - 64


def test_a_one_token_tail_is_fed_with_the_chunk_before_it(tmp_path):
    ds = dataset([129], [0])
    run = CurriculumRun({"truncation": "split", "levels": [{"input_len": 64}]}, tmp_path)
    loader = run.train_loader(ds, lambda b: b, batch_size=1, n_batches=3, max_steps=3)
    chunks = sorted((p[0], len(p)) for step in fed_examples(loader, False) for _, p, _ in step)
    assert chunks == [(0, 64), (64, 63), (127, 2)]  # no chunk of one token (it trains nothing)
    assert np.sum([n for _, n in chunks]) == 129


@pytest.mark.e2e
def test_split_through_axolotl_feeds_every_document_token_once_per_pass(axolotl_train, tmp_path,
                                                                          tiny_model):
    """Documents of 70-128 tokens at a 32-token level, packed, one epoch: the examples the
    model's forward received are the documents' consecutive 32-token pieces; the epoch
    (Axolotl's own batch count; packed rows stay full) holds a pass over them and part of the
    next, and feeds every piece once in the first pass and at most once in the next."""
    from axolotl_curriculum.testing import write_corpus
    from e2e_checks import examples_in, forwards, pad_token_id

    data = write_corpus(tmp_path / "docs.jsonl", tiny_model, n=60, min_tokens=70, max_tokens=128,
                        seed=3)
    run = axolotl_train(probe=True, datasets=[{"path": str(data), "type": "completion",
                                               "ds_type": "json"}], max_steps=None,
                        curriculum={"truncation": "split", "levels": [{"input_len": 32}]})
    rows = [json.loads(line) for line in (run.out / "train_rows.jsonl").read_text().splitlines()]
    pieces = Counter()
    for row in rows:
        ids, n = row["input_ids"], len(row["input_ids"])
        edges = list(range(0, n, 32)) + [n]
        if n % 32 == 1:
            edges[-2] -= 1
        pieces.update(tuple(ids[a:b]) for a, b in zip(edges, edges[1:]))
    pad = pad_token_id(run.out)
    fed = Counter(tuple(ids) for f in forwards(run.out) for row in examples_in(f, pad)
                  for ids, _ in row)
    assert set(fed) <= set(pieces)  # every example is one of the pieces
    units, total = sum(pieces.values()), sum(fed.values())
    assert units < total < 2 * units  # the epoch holds a pass and part of the next
    assert set(pieces.values()) == {1}  # no two pieces alike: a piece names its place
    times = Counter(fed[p] for p in pieces)
    # the first pass fed every piece once; the part of the second, each piece at most once more
    assert set(times) <= {1, 2} and times[2] == total - units, times
    assert sum(r["global_chunks"] for r in run.rank(0)) == sum(
        n for p, n in fed.items() if len(p) < 70)  # every piece of a 70+-token document
