"""The experiment: does a staged input length calm training, save compute, change the model?

    .venv/bin/python benchmarks/experiment.py                 # ~10 min on a 2-core CPU
    .venv/bin/python benchmarks/experiment.py --size gpu      # a larger model, on a GPU machine
    .venv/bin/python benchmarks/experiment.py --train my.jsonl --test my_test.jsonl

Every arm runs through the real `axolotl train` on the same model, data, seeds and steps, with
packing (so every arm but `examples_budget` feeds the same tokens per step). Measured per arm,
from each run's curriculum_log.jsonl and TensorBoard events and from the saved models:
final eval loss (full length), eval loss per length bucket, recall accuracy on the long-range
task, tokens to reach the baseline's final eval loss, gradient-norm volatility and spikes, the
highest learning rate that still converges, and the distance between final models (mean KL of
next-token distributions) against two baseline seeds. Writes docs/results.md and PNG plots.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import json
import math
import os
import random
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from axolotl_curriculum.config import SenseGrad
from axolotl_curriculum.demo import axolotl_env, base_config, build_tiny_model, sentence, text
from axolotl_curriculum.sense_grad import SpikeDetector

NAMES = "ada bo cy dee eli fay gus hal ivy jo kai lu mo nia oz pip".split()
VALUES = "red blue green gold grey pink black white brown amber".split()

LR_MULTS = (1.0, 8.0, 32.0)
SIZES = {
    # seq, steps, micro_batch, hidden, layers, rows, eval_every, lr
    "small": dict(seq=256, steps=160, mbs=2, hidden=64, layers=2, rows=1500, eval_every=20, lr=2e-3),
    "gpu": dict(seq=1024, steps=2000, mbs=8, hidden=512, layers=8, rows=60000, eval_every=100, lr=6e-4),
}


# -- data ----------------------------------------------------------------------------------------
def recall_row(rng: random.Random, mean_filler: float) -> dict:
    """Long-range structure: a key's value stated first must be recalled after filler text."""
    key, value = rng.choice(NAMES), rng.choice(VALUES)
    filler = text(rng, max(1, int(rng.lognormvariate(math.log(mean_filler), 0.9))))
    return {"text": f"{key} holds {value}. {filler} so {key} holds {value}.", "kind": "recall"}


def prose_row(rng: random.Random, mean_words: float) -> dict:
    return {"text": text(rng, max(3, int(rng.lognormvariate(math.log(mean_words), 0.9)))),
            "kind": "prose"}


def write_data(work: Path, rows: int, seq: int) -> tuple[Path, Path]:
    rng = random.Random(1234)
    mean = seq / 5
    make = lambda: recall_row(rng, mean) if rng.random() < 0.5 else prose_row(rng, mean)  # noqa
    train = [make() for _ in range(rows)]
    test = [make() for _ in range(max(200, rows // 10))]
    for path, data in ((work / "train.jsonl", train), (work / "test.jsonl", test)):
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    return work / "train.jsonl", work / "test.jsonl"


# -- arms ----------------------------------------------------------------------------------------
def staircase(seq: int, steps: int, n: int, frac: float = 0.4) -> list[dict]:
    lens = [max(8, seq * (k + 1) // n) for k in range(n)]
    per = max(1, int(steps * frac) // (n - 1)) if n > 1 else None
    return [{"input_len": L, "max_steps": per} for L in lens[:-1]] + [{"input_len": lens[-1]}]


def arms(size: dict) -> dict[str, dict]:
    seq, steps = size["seq"], size["steps"]
    linear = staircase(seq, steps, 4)
    gated = [{**lv, "max_steps": 2 * lv["max_steps"]} if "max_steps" in lv else lv for lv in linear]
    tiny = [{"input_len": L, "max_steps": max(1, int(steps * 0.4) // (seq // 8))}
            for L in range(8, seq, 8)] + [{"input_len": seq}]
    return {
        "baseline": {"levels": [{"input_len": seq}]},
        "linear": {"levels": linear},
        "sense_grad": {"levels": gated, "sense_grad": {"check_every": 5, "window": 10,
                                                       "settle_steps": 3, "min_steps": 10}},
        "tiny_steps": {"levels": tiny},
        "segment": {"levels": linear, "truncation": "segment"},
        "filter": {"levels": linear, "truncation": "filter"},
        "examples_budget": {"levels": linear, "budget": "examples"},
        "auto": {"levels": "auto"},  # the ladder levels: auto chooses from the data and steps
        # difficulty at full length (docs/difficulty.md): a growing easiest share by rarity,
        # and the control that admits the same shares at random
        "rarity": {"difficulty": "rarity", "levels": admit_ladder(seq, steps)},
        "random_admit": {"difficulty": {"score": "random", "seed": 1},
                         "levels": admit_ladder(seq, steps)},
    }


def admit_ladder(seq: int, steps: int) -> list[dict]:
    """Full length throughout; a third, then two thirds of the examples for 20% of the steps each."""
    per = max(1, steps // 5)
    return [{"input_len": seq, "max_steps": per, "admit": 0.33},
            {"input_len": seq, "max_steps": per, "admit": 0.66}, {"input_len": seq}]


@dataclass
class Run:
    arm: str
    seed: int
    lr_mult: float
    out: Path
    seconds: float = 0.0
    records: list[dict] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    ok: bool = True

    @property
    def name(self) -> str:
        return f"{self.arm}-s{self.seed}-lr{self.lr_mult:g}"


def train(run: Run, model: Path, train_path: Path, test_path: Path | None, size: dict,
          curriculum: dict, datasets: list | None = None) -> Run:
    cfg = base_config(
        model, train_path, run.out, sequence_len=size["seq"], max_steps=size["steps"],
        micro_batch_size=size["mbs"], learning_rate=size["lr"] * run.lr_mult, seed=run.seed,
        data_seed=run.seed, logging_steps=10, lr_scheduler="cosine",
        warmup_steps=max(1, size["steps"] // 20), use_tensorboard=True,
        excess_length_strategy="truncate", curriculum=curriculum,
        test_datasets=[{"path": str(test_path), "type": "completion", "ds_type": "json",
                        "split": "train"}] if test_path else None,
        eval_strategy="steps", eval_steps=size["eval_every"], eval_sample_packing=False,
        save_strategy="no",
    )
    if size is SIZES["gpu"]:
        cfg.update(bf16=True, attn_implementation="sdpa")
    if datasets:
        cfg["datasets"] = datasets
        if not test_path:
            cfg["val_set_size"] = 0.05
    run.out.mkdir(parents=True, exist_ok=True)
    path = run.out / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**axolotl_env(), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.run(["axolotl", "train", str(path)], env=env, capture_output=True, text=True)
    run.seconds = time.perf_counter() - t
    (run.out / "train.log").write_text(proc.stdout + proc.stderr)
    log = run.out / "curriculum_log.jsonl"
    run.ok = proc.returncode == 0 and log.exists()
    if log.exists():
        run.records = sorted((json.loads(l) for l in log.read_text().splitlines()),
                             key=lambda r: r["step"])
    run.evals = read_evals(run.out)
    return run


def read_evals(out: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "runs").rglob("events.out.tfevents.*")) if (out / "runs").exists() else []
    evals = []
    for ev in events:
        acc = EventAccumulator(str(ev))
        acc.Reload()
        if "eval/loss" in acc.Tags().get("scalars", []):
            evals += [(e.step, e.value) for e in acc.Scalars("eval/loss")]
    return sorted(evals)


# -- measurements --------------------------------------------------------------------------------
def volatility(records: list[dict], frac: float = 1.0) -> dict:
    recs = records[: max(3, int(len(records) * frac))]
    grad = np.array([r["grad_norm"] for r in recs], dtype=float)
    loss = np.array([r["loss"] for r in recs], dtype=float)
    cfg = SenseGrad()
    detect = SpikeDetector(cfg.ema_beta, cfg.grad_spike_factor, cfg.loss_spike_factor)
    spikes = sum(detect(g, lo) for g, lo in zip(grad, loss))
    finite = grad[np.isfinite(grad)]
    cv = float(finite.std() / finite.mean()) if len(finite) > 2 and finite.mean() > 0 else math.nan
    return {"grad_cv": cv, "spikes": int(spikes)}


def tokens_to(run: Run, target: float) -> float:
    cum = np.cumsum([r["tokens"] for r in run.records])
    for step, loss in run.evals:
        if loss <= target and step - 1 < len(cum):
            return float(cum[step - 1])
    return math.nan


def posthoc(model_dirs: dict[str, Path], test_path: Path, seq: int, limit: int = 200) -> dict:
    """Per model: eval loss per length bucket and recall accuracy; pairwise mean KL to baseline."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [json.loads(l) for l in test_path.read_text().splitlines()][:limit]
    tok = AutoTokenizer.from_pretrained(next(iter(model_dirs.values())))
    encoded = [tok(r["text"])["input_ids"][:seq] for r in rows]
    logprobs, out = {}, {}
    for name, path in model_dirs.items():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        per_row, correct, total, lps = [], 0, 0, []
        with torch.no_grad():
            for row, ids in zip(rows, encoded):
                x = torch.tensor([ids])
                lp = torch.log_softmax(model(x).logits[0, :-1].float(), -1)
                nll = -lp.gather(1, x[0, 1:, None])[:, 0]
                per_row.append((len(ids), float(nll.mean())))
                lps.append(lp)
                if row.get("kind") == "recall" and len(tok(row["text"])["input_ids"]) <= seq:
                    # "... so ada holds red." : is " red" the most likely next token?
                    value_ids = tok(" " + row["text"].rstrip(".").split()[-1])["input_ids"]
                    pos = len(ids) - len(value_ids) - 1  # index of the value's first token
                    if pos >= 2:
                        total += 1
                        correct += int(lp[pos - 1].argmax() == ids[pos])
        buckets = {"short": [], "mid": [], "long": []}
        for n, loss in per_row:
            buckets["short" if n < seq // 4 else "mid" if n < seq // 2 else "long"].append(loss)
        out[name] = {"buckets": {k: float(np.mean(v)) if v else math.nan for k, v in buckets.items()},
                     "recall": correct / total if total else math.nan}
        logprobs[name] = lps
    base = "baseline-s0-lr1"
    for name in model_dirs:
        if name != base and base in logprobs:
            kl = [float((a.exp() * (a - b)).sum(-1).mean())
                  for a, b in zip(logprobs[base], logprobs[name])]
            out[name]["kl_to_baseline"] = float(np.mean(kl))
    return out


# -- report --------------------------------------------------------------------------------------
def fmt(x, spec=".3f"):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def spread(values: list[float], spec=".3f") -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "n/a"
    return f"{np.mean(vals):{spec}} ± {np.std(vals):{spec}}" if len(vals) > 1 else f"{vals[0]:{spec}}"


def plots(runs: list[Run], out: Path, sweep: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    main = [r for r in runs if r.seed == 0 and r.lr_mult == 1 and r.records]
    fig, axes = plt.subplots(2, 1, figsize=(10, 8), sharex=True)
    for r in main:
        tokens = np.cumsum([x["tokens"] for x in r.records])
        axes[0].plot(tokens, [x["loss"] for x in r.records], label=r.arm, lw=1)
        axes[1].plot(tokens, [x["grad_norm"] for x in r.records], label=r.arm, lw=1)
    linear = next((r for r in main if r.arm == "linear"), None)
    if linear:
        tokens = np.cumsum([x["tokens"] for x in linear.records])
        levels = [x["level"] for x in linear.records]
        for k in sorted(set(levels)):
            idx = [i for i, lv in enumerate(levels) if lv == k]
            for ax in axes:
                ax.axvspan(tokens[idx[0]] - linear.records[idx[0]]["tokens"], tokens[idx[-1]],
                           color=f"C{k}", alpha=0.06)
    axes[0].set_ylabel("training loss")
    axes[1].set_ylabel("gradient norm")
    axes[1].set_xlabel("tokens fed (bands: levels of the linear arm)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "results_curves.png", dpi=90)
    names.append("results_curves.png")
    plt.close(fig)

    by_arm: dict[str, list[Run]] = {}
    tok_ratios: dict[str, list[float]] = {}
    for r in runs:
        if r.lr_mult == 1 and r.records:
            by_arm.setdefault(r.arm, []).append(r)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    arms_ = list(by_arm)
    for ax, key, title in ((axes[0], "grad_cv", "grad-norm CV, first 30% of steps"),
                           (axes[1], "spikes", "spikes, whole run")):
        frac = 0.3 if key == "grad_cv" else 1.0
        vals = [[volatility(r.records, frac)[key] for r in by_arm[a]] for a in arms_]
        ax.bar(arms_, [np.nanmean(v) for v in vals], yerr=[np.nanstd(v) for v in vals], capsize=3)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out / "results_volatility.png", dpi=90)
    names.append("results_volatility.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, points in sweep.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=arm)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("learning rate multiplier")
    ax.set_ylabel("final eval loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "results_lr_sweep.png", dpi=90)
    names.append("results_lr_sweep.png")
    plt.close(fig)
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp folder)")
    ap.add_argument("--report", default="docs", help="where results.md and the plots go")
    ap.add_argument("--train", help="your own training rows (jsonl, a 'text' field)")
    ap.add_argument("--test", help="your own held-out rows (jsonl, a 'text' field)")
    ap.add_argument("--datasets", help="a YAML file with an Axolotl `datasets:` list to train on "
                    "(eval: --test if given, else 5%% of that data; no per-bucket/KL analysis)")
    ap.add_argument("--arms", nargs="*", help="a subset of arms")
    args = ap.parse_args()
    size = SIZES[args.size]
    work = Path(args.work or f"/tmp/curriculum-experiment-{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = build_tiny_model(work / "model")
    if args.size == "gpu" or size["hidden"] != 32:
        model = build_model(work / f"model-{args.size}", size, model)
    datasets = yaml.safe_load(Path(args.datasets).read_text())["datasets"] if args.datasets else None
    if args.train or datasets:
        train_path = Path(args.train).resolve() if args.train else None
        test_path = Path(args.test).resolve() if args.test else None
    else:
        train_path, test_path = write_data(work, size["rows"], size["seq"])
    all_arms = arms(size)
    chosen = args.arms or list(all_arms)
    jobs = [Run(a, s, 1.0, work / f"{a}-s{s}") for a in chosen for s in range(args.seeds)]
    for mult in LR_MULTS[1:]:
        for a in ("baseline", "linear"):
            if a in chosen:
                jobs.append(Run(a, 0, mult, work / f"{a}-s0-lr{mult:g}"))
    print(f"experiment: {len(jobs)} runs of {size['steps']} steps in {work}", flush=True)
    with futures.ThreadPoolExecutor(args.jobs) as pool:
        done = list(pool.map(lambda r: train(r, model, train_path, test_path, size,
                                             all_arms[r.arm], datasets), jobs))
    for r in done:
        print(f"  {r.name}: {'ok' if r.ok else 'FAILED'} in {r.seconds:.0f}s", flush=True)
    report(done, model, test_path, size, args, Path(args.report), time.perf_counter() - started)
    return 0


def build_model(out: Path, size: dict, tokenizer_dir: Path) -> Path:
    """The benchmark's model: the tiny llama's tokenizer with a wider/deeper body."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    for f in tokenizer_dir.glob("tokenizer*"):
        shutil.copy(f, out / f.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=size["hidden"],
                      intermediate_size=size["hidden"] * 2, num_hidden_layers=size["layers"],
                      num_attention_heads=max(2, size["hidden"] // 32),
                      num_key_value_heads=max(2, size["hidden"] // 32),
                      max_position_embeddings=size["seq"] * 2, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def report(runs: list[Run], model: Path, test_path: Path, size: dict, args, out_dir: Path,
           seconds: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    main_runs = [r for r in runs if r.lr_mult == 1 and r.ok]
    final = {r.name: (r.evals[-1][1] if r.evals else math.nan) for r in runs}
    # the loss every baseline seed reached: the target the other arms race to
    base_final = np.nanmax([final[r.name] for r in main_runs if r.arm == "baseline"] or [math.nan])
    base_tokens = np.nanmedian([tokens_to(r, base_final) for r in main_runs if r.arm == "baseline"]
                               or [math.nan])
    models = {r.name: r.out for r in main_runs if (r.out / "model.safetensors").exists()}
    post = posthoc(models, test_path, size["seq"]) if test_path else {}

    lines = [
        "# Results: staged input lengths vs full length from the first step",
        "",
        f"Written by `{' '.join(shlex.quote(a) for a in [sys.executable.split('/')[-1], *sys.argv])}`"
        f" on {time.strftime('%Y-%m-%d')} ({seconds / 60:.1f} min, {os.cpu_count()} CPU cores, "
        f"{len(runs)} runs through `axolotl train`).",
        "",
        f"Setup: llama {size['layers']} layers x {size['hidden']} hidden, sequence_len {size['seq']},"
        f" packed, {size['mbs']} rows per micro-batch, {size['steps']} steps, cosine LR "
        f"{size['lr']:g}, seeds 0..{args.seeds - 1}. Data: "
        + ("the user's" if args.train else
           "half long-range recall rows ('ada holds red. <filler> so ada holds red.'), half prose;"
           " log-normal lengths, long-tailed") + ". Eval: full-length held-out rows.",
        "",
        "## Main comparison (learning rate x1; mean ± std over seeds)",
        "",
        "| arm | final eval loss | tokens to baseline's final loss (ratio) | grad-norm CV, first 30% | grad-norm CV, all | spikes | wall s (incl. startup) |",
        "|---|---|---|---|---|---|---|",
    ]
    by_arm: dict[str, list[Run]] = {}
    tok_ratios: dict[str, list[float]] = {}
    for r in main_runs:
        by_arm.setdefault(r.arm, []).append(r)
    for arm, rs in by_arm.items():
        tok_ratio = tok_ratios[arm] = [base_tokens / tokens_to(r, base_final) for r in rs]
        reached = sum(not math.isnan(t) for t in tok_ratio)
        lines.append(
            f"| {arm} | {spread([final[r.name] for r in rs])} | {spread(tok_ratio, '.2f')} "
            f"({reached}/{len(rs)} reached) | "
            f"{spread([volatility(r.records, 0.3)['grad_cv'] for r in rs])} | "
            f"{spread([volatility(r.records)['grad_cv'] for r in rs])} | "
            f"{spread([float(volatility(r.records)['spikes']) for r in rs], '.1f')} | "
            f"{spread([r.seconds for r in rs], '.0f')} |")
    lines += ["", f"Target: {fmt(base_final)}, the highest final eval loss among the baseline "
              "seeds (every baseline seed reached it). Ratio > 1: the arm reached it with fewer "
              "tokens than the baseline (median of the baseline seeds); n/a: never reached it.", "",
              "## Are the final models the same?", "",
              "| model (seed 0 unless named) | eval loss short / mid / long | recall accuracy | mean KL to baseline seed 0 |",
              "|---|---|---|---|"]
    for name, p in post.items():
        b = p["buckets"]
        lines.append(f"| {name} | {fmt(b['short'])} / {fmt(b['mid'])} / {fmt(b['long'])} | "
                     f"{fmt(p['recall'], '.2f')} | {fmt(p.get('kl_to_baseline'), '.4f')} |")
    lines += ["", "The KL between two baseline seeds is the yardstick: an arm whose KL to the "
              "baseline is near it ends where a re-run of the baseline would.", ""]
    sweep: dict[str, dict[float, float]] = {}
    for r in runs:
        if r.seed == 0:
            sweep.setdefault(r.arm, {})[r.lr_mult] = final[r.name]
    sweep = {a: p for a, p in sweep.items() if len(p) > 1}
    lines += ["## Stability margin (seed 0)", "",
              "| arm | " + " | ".join(f"LR x{m:g}" for m in LR_MULTS) + " | spikes "
              + " / ".join(f"x{m:g}" for m in LR_MULTS) + " |",
              "|---|---|---|---|---|"]
    spikes_at = {r.name: volatility(r.records)["spikes"] if r.records else math.nan for r in runs}
    for arm, points in sweep.items():
        cells = [fmt(points.get(m)) for m in LR_MULTS]
        sp = [str(spikes_at.get(f"{arm}-s0-lr{m:g}", "n/a")) for m in LR_MULTS]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {' / '.join(sp)} |")
    lines += ["", "Final eval loss at each learning-rate multiplier (n/a or a rising loss: the run "
              "did not converge).", ""]
    ratios = {a: np.nanmedian(t or [math.nan]) for a, t in tok_ratios.items() if a != "baseline"}
    best = max(ratios, key=lambda a: -1 if math.isnan(ratios[a]) else ratios[a]) if ratios else None
    top = LR_MULTS[-1]
    b_sp, l_sp = spikes_at.get(f"baseline-s0-lr{top:g}"), spikes_at.get(f"linear-s0-lr{top:g}")
    lines += ["## The targets, met or not", "",
              f"- Reach the baseline's final eval loss with >= 1.5x fewer tokens: best arm "
              f"{best} at {fmt(ratios.get(best), '.2f')}x (median over seeds): "
              + ("met." if best and ratios[best] >= 1.5 else "not met.")
              + " Within the seed spread above, treat ratios near 1 as no difference.",
              f"- At LR x{top:g}, >= 2x fewer spikes than the baseline: baseline {b_sp}, linear "
              f"{l_sp}: " + ("met." if b_sp and l_sp is not None and b_sp >= 2 * max(l_sp, 0.5)
                            else "not met (or too few spikes to tell)."),
              "- Plugin overhead within 2% at full length: see docs/benchmarks.md.", ""]
    names = plots(runs, out_dir, sweep)
    lines += ["## Plots", ""] + [f"![{n}]({n})" for n in names]
    lines += ["", "## Reading it honestly", "",
              "- Differences smaller than the seed spread (±) are noise.",
              "- Tokens and wall time per step are equal across packed arms by construction (rows "
              "stay full); `examples_budget` feeds fewer tokens at short levels.",
              "- Recall accuracy is the long-range test: the value token after 'so <name> holds'."
              " With 10 values, chance is 0.10; a tiny model trained for minutes barely leaves it,"
              " so differences there are noise at this size (`--size gpu` trains long enough).",
              "- Plugin overhead at full length is measured separately: docs/benchmarks.md.", ""]
    (out_dir / "results.md").write_text("\n".join(lines))
    (out_dir / "results.json").write_text(json.dumps(
        {"final_eval_loss": final, "posthoc": post, "sweep": {a: {str(k): v for k, v in p.items()}
                                                              for a, p in sweep.items()}},
        indent=1, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
