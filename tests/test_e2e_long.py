"""Long lengths through `axolotl train` on CPU: documents of 4-8K tokens, levels up to 8192 with
the RoPE base raised per level and documents split at the short levels; the tiny model trains
at every level, and what its forward received is read from outside (the fed probe)."""

from __future__ import annotations

import pytest

from e2e_checks import assert_plan_matches_fed, examples_in, fed_by_forward, forwards, pad_token_id

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def long_documents(tiny_model, tmp_path_factory):
    from axolotl_curriculum.testing import write_corpus

    return write_corpus(tmp_path_factory.mktemp("long") / "docs.jsonl", tiny_model, n=12,
                        min_tokens=4096, max_tokens=8192, seed=7)


def test_levels_up_to_8192_split_long_documents_and_raise_the_rope_base(axolotl_train,
                                                                        long_documents):
    levels = [{"input_len": 1024, "max_steps": 2, "rope_theta": 40_000.0},
              {"input_len": 4096, "max_steps": 2, "rope_theta": 160_000.0},
              {"input_len": 8192, "rope_theta": 640_000.0}]
    run = axolotl_train(probe=True, datasets=[{"path": str(long_documents), "type": "completion",
                                               "ds_type": "json"}],
                        sequence_len=8192, micro_batch_size=1, max_steps=6, logging_steps=1,
                        curriculum={"truncation": "split", "levels": levels})
    lines = run.rank(0)
    assert [r["input_len"] for r in lines] == [1024] * 2 + [4096] * 2 + [8192] * 2
    assert [r["rope_theta"] for r in lines] == [40_000.0] * 2 + [160_000.0] * 2 + [640_000.0] * 2
    fed = fed_by_forward(run.out)[0]
    for step, seen in fed.items():
        input_len = lines[step - 1]["input_len"]
        assert seen["longest"] <= input_len
        assert seen["positions"] == 8192  # a packed row of 8192 positions at every level
    # the short levels feed whole 1024- and 4096-token pieces of the documents (split)
    assert fed[1]["longest"] == 1024 and fed[3]["longest"] == 4096
    assert all(r["global_chunks"] > 0 for r in lines[:4])
    assert max(len(ids) for f in forwards(run.out) for ids in f["input_ids"]) == 8192


def test_a_longer_level_keeps_short_data_at_its_share(axolotl_train):
    """`short_share`: packed, that share of each step's rows holds the first level's cuts. Read
    from the forward: the rows whose examples are no longer than the first level's input_len
    (every row of the corpus is longer); their tokens are the log's `global_short_tokens`; no
    row twice in a step, and the log's counts and the plan are what the forward received."""
    run = axolotl_train(probe=True, micro_batch_size=2, gradient_accumulation_steps=2,
                        max_steps=8, logging_steps=1,
                        curriculum={"levels": [{"input_len": 32, "max_steps": 3},
                                               {"input_len": 128, "short_share": 0.25}]})
    lines = run.rank(0)
    assert_plan_matches_fed(run.out)
    assert all(lines[s]["global_short_tokens"] == 0 for s in range(3))
    pad_id = pad_token_id(run.out)
    for step in range(4, 9):
        rows = [pieces for f in forwards(run.out) if f["step"] == step
                for pieces in examples_in(f, pad_id)]
        short_rows = [r for r in rows if all(len(ids) <= 32 for ids, _ in r)]
        short = sum(len(ids) for r in rows for ids, _ in r if len(ids) <= 32)
        assert lines[step - 1]["global_short_tokens"] == short
        # packed: whole rows hold the short examples, 1 of the step's 4 (0.25 x 4); the rest
        # hold the level's own (every corpus row is longer than 32 tokens)
        assert len(rows) == 4 and len(short_rows) == 1, (step, rows)
