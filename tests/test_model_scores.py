"""`loss` and `ifd` difficulty: per example against the model's own loss, one row at a time, and
identical on every rank of a 2-process gloo job."""

import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_curriculum.testing import text
from axolotl_curriculum.data.model_scores import model_scores
from axolotl_curriculum.data.rows import row_stats

ROOT = Path(__file__).resolve().parents[1]


def instructions(model_dir, n=23):
    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        prompt = tok(text(rng, rng.randint(1, 12)))["input_ids"]
        answer = tok(text(rng, rng.randint(2, 12)))["input_ids"]
        rows.append({"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer})
    return Dataset.from_list(rows)


def reference(model, row, score):
    """The model's own mean loss over the answer (HF shifts labels), one row at a time."""
    ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=labels).loss.item()
        if score == "loss":
            return loss
        first = next(i for i, label in enumerate(row["labels"]) if label != -100)
        cut = max(first - 1, 0)
        alone = model(input_ids=ids[:, cut:], labels=labels[:, cut:]).loss.item()
    return loss / alone


@pytest.mark.parametrize("score", ["loss", "ifd"])
def test_scores_equal_the_models_own_loss_row_by_row(tiny_model, score):
    dataset = instructions(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    got = model_scores(score, model, dataset, row_stats(dataset), batch_size=4)
    want = [reference(model, dataset[i], score) for i in range(len(dataset))]
    np.testing.assert_allclose(got, want, rtol=1e-4)


@pytest.mark.parametrize("score", ["loss", "ifd"])
def test_trl_rows_score_their_completion_only(tiny_model, score):
    """TRL's format: `completion_mask` and no `labels`; the prompt is not scored, as in the
    reference, which gives the model the same row with the prompt's labels masked."""
    dataset = instructions(tiny_model)
    trl = Dataset.from_list([{"input_ids": r["input_ids"],
                              "completion_mask": [int(t != -100) for t in r["labels"]]}
                             for r in dataset])
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    got = model_scores(score, model, trl, row_stats(trl), batch_size=4)
    want = [reference(model, dataset[i], score) for i in range(len(dataset))]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_a_sample_scores_its_share_and_gives_the_rest_the_median(tiny_model):
    dataset = instructions(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    full = model_scores("loss", model, dataset, row_stats(dataset))
    part = model_scores("loss", model, dataset, row_stats(dataset), sample=0.4, seed=1)
    scored = np.isclose(part, full)
    assert abs(scored.sum() - round(0.4 * len(dataset))) <= 1
    assert np.allclose(part[~scored], np.median(part[scored]))


@pytest.mark.e2e
def test_two_gloo_ranks_hold_the_same_scores(tiny_model, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(port), str(ROOT / "tests" / "model_scores_ranks.py"),
         str(tiny_model), str(tmp_path), "ifd"],
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "tests")},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (np.load(tmp_path / f"ifd.rank{r}.npy") for r in (0, 1))
    assert np.array_equal(a, b)
    dataset = instructions(tiny_model)
    alone = model_scores("ifd", AutoModelForCausalLM.from_pretrained(tiny_model), dataset,
                         row_stats(dataset))
    np.testing.assert_allclose(a, alone, rtol=1e-5)  # the shards add up to the whole


def test_rows_too_short_to_score_are_the_hardest(tiny_model):
    rows = [{"input_ids": [5], "labels": [5]}, {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}]
    dataset = Dataset.from_list(rows)
    got = model_scores("loss", AutoModelForCausalLM.from_pretrained(tiny_model), dataset,
                       row_stats(dataset))
    assert got[0] == np.inf and np.isfinite(got[1])
