"""Probes and the eval gate through the real `axolotl train` (issue 22).

- packed, LoRA: a run with probes and an unreachable `passkey_min` feeds, step by step, the
  token ids the same run without probes feeds (the forward, recorded from outside), and every
  level runs to its cap;
- 2 gloo ranks, unpacked: a reachable `short_tolerance` ends level 0 before its cap on the step
  the log's decision names, on both ranks (the forward's example lengths say when);
- 1 rank on passkey prompts (benchmarks/passkey_learning.py): the model learns retrieval, the
  probe's accuracy on held-out keys rises from 0, and recomputed from the saved model with
  transformers' own `generate` it equals the last logged value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from axolotl_curriculum.testing import write_corpus
from conftest import two_ranks
from e2e_checks import examples_in, forwards, pad_token_id

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import passkey_learning  # noqa: E402

pytestmark = pytest.mark.e2e

PROBES = {"every": 2, "short": {"rows": 8}, "position_loss": {"rows": 4, "first_bucket": 16}}


def steps_of(out, rank):
    """Per optimizer step, the examples (token ids) the forward received on `rank`."""
    pad = pad_token_id(out)
    per_step: dict[int, list[list[int]]] = {}
    for f in forwards(out, rank):
        per_step.setdefault(f["step"], []).extend(
            ids for row in examples_in(f, pad) for ids, _ in row)
    return per_step


@pytest.fixture(scope="module")
def longer_corpus(tiny_model, tmp_path_factory):
    """Rows of 170-300 tokens: a 160-token level cuts every one, and holds a passkey prompt."""
    return write_corpus(tmp_path_factory.mktemp("longer") / "rows.jsonl", tiny_model, n=160,
                        min_tokens=170, max_tokens=300, seed=3)


def test_probes_change_no_batch_and_an_unreachable_gate_runs_every_level_to_its_cap(
        axolotl_train, tmp_path, longer_corpus):
    levels = [{"input_len": 32, "max_steps": 8}, {"input_len": 160, "max_steps": 8},
              {"input_len": 256}]
    common = dict(probe=True, max_steps=18, logging_steps=2,
                  sequence_len=256, val_set_size=0.1, eval_strategy="no", dataloader_num_workers=0,
                  datasets=[{"path": str(longer_corpus), "type": "completion", "ds_type": "json"}],
                  adapter="lora", lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    plain = axolotl_train(**common, curriculum={"levels": levels}).out.rename(tmp_path / "plain")
    probes = {**PROBES, "passkey": {"lengths": [160], "depths": [0.5], "rows": 2}}
    probed = axolotl_train(**common, curriculum={"levels": levels, "probes": probes,
                                                 "sense_eval": {"passkey_min": 1.0}})
    fed = steps_of(probed.out, 0)
    assert fed == steps_of(plain, 0)  # token ids, step by step
    longest = [max(len(ids) for ids in fed[s]) for s in sorted(fed)]
    assert longest[:16] == [32] * 8 + [160] * 8 and min(longest[16:]) > 160  # the caps
    recs = probed.rank(0)
    assert [r["step"] for r in recs if "probe/short" in r] == list(range(2, 19, 2))
    # the gate decides on the probes, and the passkey at level 1's length is not found
    holds = {(r["level"], r["reason"]) for r in recs if r.get("decision") == "hold"}
    assert holds == {(0, "no passkey probe within input_len 32"), (1, "passkey@160 0 < 1.0")}
    assert all(r["decision"] in ("hold", "pending", "last_level") for r in recs if "decision" in r)
    assert "'curriculum/probe/short'" in probed.output  # the trainer's log line
    assert "'curriculum/probe/passkey@160'" in probed.output


def test_a_reachable_gate_ends_the_level_on_the_logged_step_on_both_ranks(axolotl_train):
    levels = [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "max_steps": 10},
              {"input_len": 128}]
    run = axolotl_train(two_ranks(), probe=True, max_steps=14, logging_steps=2,
                        sample_packing=False, val_set_size=0.1, eval_strategy="no",
                        dataloader_num_workers=0,
                        curriculum={"levels": levels, "probes": PROBES,
                                    "sense_eval": {"short_tolerance": 10.0}})
    r0, r1 = run.rank(0), run.rank(1)
    advances = [r for r in r0 if r.get("decision") == "advance"]
    assert advances and advances[0]["level"] == 0, r0
    assert advances[0]["reason"].startswith("recovered: short")
    assert advances[0]["short_before"] is not None
    first = int(advances[0]["reason"].rsplit(" ", 1)[1])  # "...; level 1 from step N"
    assert first < 11  # before max_steps would have forced it
    assert [(r["step"], r.get("decision")) for r in r0] == [(r["step"], r.get("decision")) for r in r1]
    probed = [{k: v for k, v in r.items() if k.startswith("probe/")} for r in r0]
    assert probed == [{k: v for k, v in r.items() if k.startswith("probe/")} for r in r1]
    for rank in (0, 1):  # the witness: the forward's examples get longer on the step named
        fed = steps_of(run.out, rank)
        longest = [max(len(ids) for ids in fed[s]) for s in sorted(fed)]
        assert longest[:first - 1] == [32] * (first - 1) and longest[first - 1] > 32, longest


def test_the_passkey_probe_rises_as_the_model_learns_retrieval_and_generate_agrees(tmp_path):
    """A 2-layer llama (hidden 64) trained through `axolotl train` on passkey prompts with
    keys of 2 digits (benchmarks/passkey_learning.py, 1000 steps): the probe's held-out prompts
    have other keys, so only retrieval scores (chance 0.01). Level 0 (64 tokens) cuts every row
    before its question: 0 there; at full length the model learns to retrieve (0.69 at 700
    steps on the development machine; 0.2 asked), and transformers' own greedy `generate` on the
    saved model gives the probe's last value."""
    result = passkey_learning.learn(tmp_path, steps=1000)
    curve = result["curve"]
    assert [step for step, _, _ in curve] == list(range(100, 1001, 100))
    first_full = next(acc for _, level, acc in curve if level == 1)
    assert curve[0][1:] == (0, 0.0) and first_full <= 0.05, curve
    assert curve[-1][2] >= 0.2 and max(acc for *_, acc in curve[-3:]) >= first_full + 0.15, curve
    assert result["generate"] == curve[-1][2]
