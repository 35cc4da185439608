"""The final models side by side on the held-out rows at full length: loss per length bucket,
the long-range task's accuracy, and the KL between models (against the seed-to-seed KL)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

BUCKETS = ("short", "mid", "long")
TASKS = ("recall", "other")  # the long-range recall rows; the rest (instructions or prose)


def _rows(test: Path, fmt: str, limit: int, tok) -> list[tuple[str, str, str]]:
    """(prompt, answer, kind) per held-out row; a completion row's answer is its whole text, a
    chat's its last turn (the turns before, in the tokenizer's template, its prompt)."""
    from axolotl.prompters import AlpacaPrompter

    out = []
    prompter = AlpacaPrompter()
    for line in test.read_text().splitlines()[:limit]:
        row = json.loads(line)
        if fmt == "chat_template":
            messages = row["messages"]
            prompt = tok.apply_chat_template(messages[:-1], tokenize=False,
                                             add_generation_prompt=True)
            out.append((prompt, messages[-1]["content"], row.get("kind", "")))
        elif fmt == "alpaca":
            prompt = next(iter(prompter.build_prompt(row["instruction"], row.get("input") or None)))
            out.append((prompt, row["output"], row.get("kind", "")))
        else:
            out.append(("", row["text"], row.get("kind", "")))
    return out


def load(path: Path):
    from transformers import AutoModelForCausalLM

    if (path / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).eval()
    return AutoModelForCausalLM.from_pretrained(path).eval()


def compare(models: dict[str, Path], test: Path, fmt: str, seq: int, limit: int = 240) -> dict:
    """Per model: answer loss per tercile of the rows' full length and per task (recall rows
    and the others), each a mean over answer tokens as Axolotl's eval loss is, recall accuracy,
    and the mean KL per answer token from the first model (the reference) to it."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(next(iter(models.values())))
    rows = _rows(test, fmt, limit, tok)
    encoded = []
    for prompt, answer, kind in rows:
        p = tok(prompt)["input_ids"] if prompt else []
        ids = (p + tok(answer)["input_ids"] + [tok.eos_token_id])[:seq]
        if len(ids) > len(p) + 1:
            encoded.append((ids, max(len(p), 1), kind, answer))
    edges = np.percentile([len(ids) for ids, *_ in encoded], [100 / 3, 200 / 3])  # terciles
    out, reference = {}, None
    for name, path in models.items():
        model = load(path)
        nll_sum = {k: [0.0, 0] for k in (*BUCKETS, *TASKS, "all")}  # (sum of nll, tokens)
        correct = total = 0
        lps = []
        with torch.no_grad():
            for ids, start, kind, answer in encoded:
                x = torch.tensor([ids])
                lp = torch.log_softmax(model(x).logits[0, start - 1:-1].float(), -1)
                target = x[0, start:]
                nll = -lp.gather(1, target[:, None])[:, 0]
                bucket = BUCKETS[sum(len(ids) >= e for e in edges)]
                for k in (bucket, "recall" if kind == "recall" else "other", "all"):
                    nll_sum[k][0] += float(nll.sum())
                    nll_sum[k][1] += len(nll)
                lps.append(lp)  # only the reference's and this model's stay in memory
                if kind == "recall":
                    # the answer "<name> holds <colour>.": every answer token the argmax
                    total += 1
                    n = len(tok(answer)["input_ids"])
                    correct += int(bool((lp[:n].argmax(-1) == target[:n]).all()))
        reference = reference or lps
        mean = {k: total_nll / n if n else math.nan for k, (total_nll, n) in nll_sum.items()}
        out[name] = {"buckets": {b: mean[b] for b in BUCKETS},
                     "tasks": {t: mean[t] for t in TASKS},
                     "loss": mean["all"],
                     "recall": correct / total if total else math.nan,
                     "kl": float(np.mean([float((p.exp() * (p - q)).sum(-1).mean())
                                          for p, q in zip(reference, lps)]))}
    return out
