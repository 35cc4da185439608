"""Probe overhead at the default probe settings, side by side with the same loop without probes.

    .venv/bin/python benchmarks/probes.py [--steps-per-level 40] [--rounds 4] [--check-every 10]
                                          [--hidden 128] [--layers 4] [--batch-size 4]
                                          [--threads 1] [--clock cpu]

One hand-written training loop (tests/test_probes.py's `_loop`: AdamW, unpacked micro-batches of
`--batch-size` rows, `CurriculumRun.on_micro_batch`/`on_step_end`) on a randomly initialised
llama (`testing.save_llama` with the tiny BPE tokenizer; `--hidden 32 --layers 2` is
`testing.build_tiny_model`'s size), levels [128 cap K, 256 cap K, 512] with K =
`--steps-per-level`, 3K steps per run. Rows are synthetic token ids, lengths uniform in
[96, 512] (training and held-out rows from different seeds). Two arms alternate within each
round: `none` (no `probes:` block) and `every N`: `probes: {passkey: {}, position_loss: {},
short: {}, every: N}`, every other setting at its default (N = `--check-every`; `every` only
decides when a measurement runs, not what it runs).

The overhead at the default `every: 200` is extrapolated, since 200 steps per level take too
long on a 2-core CPU: T_l = seconds per training step at level l (the loop body with the probe
time taken out; median over the steps, then over the rounds; arm `none`), P_l = one probe
measurement at level l (median of `--reps` direct `run.probes.measure` calls at level l after
the last run, warm), and overhead_l = P_l / (200 T_l + P_l). The whole default schedule at 200
steps per level (levels capped at 200) measures at steps 0 and 200 (level 0), 400 (level 1) and
600 (level 2).

The end-to-end check: the `every N` arm's extra time over `none` (the median over rounds of
each round's difference) against the extra the direct P_l predict for the measurements that
run made. Times are this process's CPU seconds (`--clock cpu`, time.process_time, with one
torch thread: the work done, less sensitive to other load on a shared machine) unless
`--clock wall`; `probes.seconds` is the run's own wall-clock sum.

`token est.` is hardware-free: probe tokens / (3 x training tokens per 200 steps + probe
tokens), taking a forward as a third of a training step per token. Batch-1 probe forwards use
a GPU less well than batched training, so read it as a lower bound there.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_curriculum import CurriculumRun
from axolotl_curriculum.testing import build_tokenizer, save_llama

LENS = (128, 256, 512)
EVERY = 200  # the default probes.every: the cadence the overhead is reported for
DEFAULT = {"passkey": {}, "position_loss": {}, "short": {}}
CLOCK = time.process_time  # --clock wall: time.perf_counter


def rows(tok, n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(96, LENS[-1] + 1, n)
    return Dataset.from_list([{"input_ids": rng.integers(4, len(tok), k).tolist()}
                              for k in lengths])


def collate(pad: int):
    def fn(batch):
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n] = labels[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return fn


def block(k: int, probes: dict | None) -> dict:
    levels = [{"input_len": LENS[0], "max_steps": k}, {"input_len": LENS[1], "max_steps": k},
              {"input_len": LENS[2]}]
    return {"levels": levels, **({"probes": probes} if probes else {})}


def one_run(args, out: Path, model_dir: Path, tok, train, held_out, probes: dict | None):
    """One training run; per-level step times, the probe calls, the wall time, and the run."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    steps = 3 * args.steps_per_level
    run = CurriculumRun(block(args.steps_per_level, probes), out, pad_token_id=tok.pad_token_id)
    loader = run.train_loader(train, collate(tok.pad_token_id), args.batch_size, seed=3,
                              tokenizer=tok, model=model, max_steps=steps,
                              eval_dataset=held_out if probes else None)
    calls: list[tuple[int, float]] = []
    measure = None
    if run.probes is not None:
        measure = run.probes.measure

        def timed(*args, **kwargs):
            began = CLOCK()
            values = measure(*args, **kwargs)
            calls.append((kwargs.get("level", args[-1] if args else None), CLOCK() - began))
            return values
        run.probes.measure = timed
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    per_level: dict[int, list[float]] = defaultdict(list)
    steps_seen: list[tuple[int, float, bool]] = []  # (level, seconds, right after a measurement)
    tokens: dict[int, list[int]] = defaultdict(list)
    began, began_wall = CLOCK(), time.perf_counter()
    run.start()
    it = iter(loader)
    after = bool(calls)
    for g in range(1, steps + 1):
        t0, p0 = CLOCK(), len(calls)
        batch = next(it)
        loss = model(**batch).loss
        loss.backward()
        run.on_micro_batch(batch, loss)
        opt.step()
        opt.zero_grad()
        run.on_step_end(g, torch.ones(()))
        spent = CLOCK() - t0 - sum(s for _, s in calls[p0:])
        level = run.timeline.level_at(g - 1)
        per_level[level].append(spent)
        steps_seen.append((level, spent, after))
        after = len(calls) > p0
        tokens[level].append(batch["input_ids"].numel())
    run.finish()
    spent, wall = CLOCK() - began, time.perf_counter() - began_wall
    return {"per_level": {lv: statistics.median(ts) for lv, ts in per_level.items()},
            "tokens": {lv: statistics.mean(ns) for lv, ns in tokens.items()},
            "calls": calls, "clock": spent, "wall": wall, "steps": steps_seen, "run": run,
            "model": model, "measure": measure,
            "probe_seconds": run.probes.seconds if run.probes is not None else 0.0}


def call(measure, model, level: int):
    """`run.probes.measure` at `level`, with the model where it takes one."""
    takes_model = "model" in inspect.signature(measure).parameters
    return measure(model, level) if takes_model else measure(level)


def direct(measure, model, reps: int) -> dict[int, float]:
    """Median seconds of `reps` direct `run.probes.measure` calls per level (after a warm-up)."""
    out = {}
    for level in range(len(LENS)):
        call(measure, model, level)
        times = []
        for _ in range(reps):
            began = CLOCK()
            call(measure, model, level)
            times.append(CLOCK() - began)
        out[level] = statistics.median(times)
    return out


def by_kind(run, measure, model, reps: int) -> dict[tuple[int, str], float]:
    """The same, one probe at a time (the others' items left out of the measurement)."""
    items, out = run.probes.items, {}
    try:
        for kind in DEFAULT:
            run.probes.items = lambda level, kind=kind: [i for i in items(level) if i.kind == kind]
            for level, seconds in direct(measure, model, reps).items():
                out[level, kind] = seconds
    finally:
        del run.probes.items  # the class's method again
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-per-level", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a tiny model gains nothing from more, and a shared "
                         "machine's spare cores stay free)")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: this process's CPU seconds (time.process_time); wall: "
                         "time.perf_counter")
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    work = Path(args.work or tempfile.mkdtemp(prefix="curriculum-probes-"))
    model_dir = work / f"llama-{args.hidden}x{args.layers}"
    if not (model_dir / "config.json").exists():
        tok = build_tokenizer(model_dir)
        save_llama(model_dir, tok, hidden=args.hidden, layers=args.layers, seq=LENS[-1])
    tok = AutoTokenizer.from_pretrained(model_dir)
    train, held_out = rows(tok, 2000, seed=1), rows(tok, 200, seed=2)
    probed = f"every {args.check_every}"
    arms = {"none": None, probed: {**DEFAULT, "every": args.check_every}}
    results: dict[str, list[dict]] = {name: [] for name in arms}
    for r in range(args.rounds):
        for i, (name, probes) in enumerate(arms.items()):
            results[name].append(one_run(args, work / f"r{r}-{i}", model_dir, tok, train,
                                         held_out, probes))
    last = results[probed][-1]
    run, model = last["run"], last["model"]
    p = direct(last["measure"], model, args.reps)
    kinds_p = by_kind(run, last["measure"], model, args.reps)
    items = {lv: run.probes.items(lv) for lv in range(len(LENS))}

    def med(name, key, lv):
        return statistics.median(res[key][lv] for res in results[name])

    k, steps = args.steps_per_level, 3 * args.steps_per_level
    unit = "CPU s" if args.clock == "cpu" else "s"
    n_params = sum(x.numel() for x in model.parameters())
    print(f"llama hidden {args.hidden}, {args.layers} layers ({n_params / 1e6:.2f}M parameters, "
          f"vocabulary {len(tok)}), batch {args.batch_size} unpacked, levels {list(LENS)}, "
          f"{k} steps each per run, {args.rounds} rounds, torch threads "
          f"{torch.get_num_threads()}, times in {unit}\n")
    print("Default probes, every 200 steps (extrapolated: P / (200 T + P)):\n")
    print(f"| level (input_len) | probe forwards (short + position_loss + passkey) | probe tokens "
          f"| T: train {unit}/step, no probes | with probes every 200 | ratio | P: {unit} per "
          f"measurement (direct; in run) | overhead | token est. |")
    print("|---|---|---|---|---|---|---|---|---|")
    in_run = defaultdict(list)
    for res in results[probed]:
        for lv, seconds in res["calls"]:
            in_run[lv].append(seconds)
    total_probe = total_train = 0.0
    schedule = Counter({0: 2, 1: 1, 2: 1})  # steps 0 and 200 at level 0, 400, 600
    for lv, n in enumerate(LENS):
        kinds = Counter(it.kind for it in items[lv])
        probe_tokens = sum(len(it.ids) for it in items[lv])
        t = med("none", "per_level", lv)
        with_probes = t + p[lv] / EVERY
        total_probe += schedule[lv] * p[lv]
        total_train += EVERY * t
        token_est = probe_tokens / (3 * EVERY * med("none", "tokens", lv) + probe_tokens)
        print(f"| {lv} ({n}) | {len(items[lv])} ({kinds['short']} + {kinds['position_loss']} + "
              f"{kinds['passkey']}) | {probe_tokens} | {t:.4f} | {with_probes:.4f} | "
              f"{with_probes / t:.3f} | {p[lv]:.3f}; {statistics.median(in_run[lv]):.3f} | "
              f"{100 * p[lv] / (EVERY * t + p[lv]):.2f}% | {100 * token_est:.2f}% |")
    print(f"\nWhole default schedule, 200 steps per level (measurements at steps 0, 200, 400, "
          f"600): {total_probe:.2f} {unit} of probes over {total_train:.1f} {unit} of training "
          f"= {100 * total_probe / (total_train + total_probe):.2f}% of the run")

    print(f"\n{unit} per measurement by probe (direct, one probe at a time; its tokens in "
          "brackets):\n")
    print("| level (input_len) | " + " | ".join(DEFAULT) + " |\n|---|" + "---|" * len(DEFAULT))
    for lv, n in enumerate(LENS):
        cells = [f"{kinds_p[lv, kind]:.3f} ({sum(len(i.ids) for i in items[lv] if i.kind == kind)})"
                 for kind in DEFAULT]
        print(f"| {lv} ({n}) | " + " | ".join(cells) + " |")

    print(f"\nEnd to end, {steps} steps per run, run.start() to run.finish(), medians of "
          f"{args.rounds} rounds:\n")
    print(f"| arm | measurements | {unit}/step | ratio | train {unit}/step, probes taken out "
          f"(levels 0, 1, 2) | extra over none, measured | predicted from direct P | measured "
          f"/ predicted | probes.seconds (wall) | rounds ({unit}) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = statistics.median(res["clock"] for res in results["none"])
    for name in arms:
        runs = results[name]
        spent = statistics.median(res["clock"] for res in runs)
        extra = statistics.median(a["clock"] - b["clock"] for a, b in zip(runs, results["none"]))
        predicted = statistics.median(sum(p[lv] for lv, _ in res["calls"]) for res in runs)
        train = ", ".join(f"{med(name, 'per_level', lv):.4f}" for lv in range(len(LENS)))
        ratio = f"{extra / predicted:.2f}" if predicted else "-"
        print(f"| {name} | {len(runs[-1]['calls'])} | {spent / steps:.4f} | {spent / base:.3f} | "
              f"{train} | {extra:+.2f} | {predicted:.2f} | {ratio} | "
              f"{statistics.median(res['probe_seconds'] for res in runs):.2f} | "
              f"{', '.join(f'{res_clock:.2f}' for res_clock in (r['clock'] for r in runs))} |")

    share = defaultdict(list)  # each step's time over the none arm's T at its level
    for res in results[probed]:
        for lv, seconds, after in res["steps"]:
            share[after].append(seconds / med("none", "per_level", lv))
    print(f"\nIn the {probed} arm, a training step's time over T at its level (probe time taken "
          f"out; median): right after a measurement {statistics.median(share[True]):.3f} "
          f"({len(share[True])} steps), the others {statistics.median(share[False]):.3f} "
          f"({len(share[False])} steps)")


if __name__ == "__main__":
    main()
