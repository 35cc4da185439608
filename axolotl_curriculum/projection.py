"""What a curriculum will feed, level by level, before training: the numbers `plan` prints.

Pure (numpy and the package's pure modules): the cuts come from `cut.level_cuts` and the steps
from `plan.BatchPlan`, the same code training runs, driven over the run's steps with the same
seed, so a step-scheduled run feeds what this projects. Compute comes from `flops.py`.
Training writes the same projection of its own run to `curriculum_plan.json` (`write_run_plan`),
which `report` puts beside what was fed.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .config import Curriculum
from .cut import Cuts, Rows, level_cuts
from .flops import train_flops
from .plan import STEP_COUNTS, BatchPlan, Packer
from .schedule import Timeline

# Per level, summed over its steps: the plan's step counts, which the training log writes as
# rank 0's `global_<key>` fields (curriculum_log.jsonl) and the summary sums per level.
TOTALS = STEP_COUNTS
LOG = logging.getLogger("axolotl_curriculum")
PLAN_FILE = "curriculum_plan.json"  # written by training (rank 0) for `report`
SAMPLE_STEPS = 2000  # steps simulated per level at most; beyond, the level's mean step counts


def _outcomes(rows: Rows, cuts: Cuts) -> dict[str, int]:
    """What the level does to every row of the data (once each, order aside)."""
    moved = (cuts.head > 0) | (cuts.start > 0)
    too_long = cuts.too_long
    fed_tokens = cuts.lengths[cuts.fed]
    return {
        "rows_whole": int((cuts.fed & (cuts.lengths >= rows.lengths)).sum()),
        "rows_cut": int((cuts.fed & (cuts.lengths < rows.lengths) & ~moved).sum()),
        "rows_prompt_cut": int((cuts.fed & moved).sum()),
        "rows_skipped_no_label": int((~cuts.fed & ~cuts.waits & ~too_long).sum()),
        "rows_skipped_too_long": int((~cuts.fed & too_long).sum()),
        "rows_waiting": int(cuts.waits.sum()),
        "tokens_kept": int(fed_tokens.sum()),
        "tokens_cut": int((rows.lengths[cuts.fed] - fed_tokens).sum()),
    }


def _step_counts(stats: dict, batches: list, packed: bool) -> dict:
    """One planned step's counts (plan.STEP_COUNTS and the waiting gauge) and fed lengths."""
    specs = [s for b in batches for s in (sum(b, []) if packed else b)]
    out = {key: int(stats[key]) for key in (*STEP_COUNTS, "waiting")}
    out["fed_lengths"] = [s[1] + s[3] - s[2] for s in specs]
    return out


def _simulate(plan: BatchPlan, level_of: list[int], per_step: int, steps_per_epoch: int,
              cuts: list[Cuts], sample: int, model_config: Any) -> tuple[dict, bool]:
    """Drive the plan over the run's steps as the loader does, epoch by epoch.

    A level simulated for `sample` steps is left (its remaining steps are projected from their
    mean) and the plan restarts at the next level's first step with a fresh order.
    """
    acc = {k: {key: 0 for key in (*TOTALS, "steps", "flops")} for k in range(len(cuts))}
    last_waiting: dict[int, int] = {}
    total, step, restarts, exact = len(level_of), 0, 0, True
    while step < total:
        epoch, first = step // steps_per_epoch, step - step % steps_per_epoch
        if step != first:  # restarted mid-epoch after leaving a sampled level
            epoch, restarts = 1_000_003 + restarts, restarts + 1
        end = min(first + steps_per_epoch, total)
        base = step
        steps = plan.epoch(epoch, (end - base) * per_step, per_step,
                           lambda k: cuts[level_of[base + k]])
        for k, (stats, batches) in enumerate(steps):
            s = base + k
            level = level_of[s]
            if acc[level]["steps"] >= sample:
                exact = False
                step = next((t for t in range(s, total) if acc[level_of[t]]["steps"] < sample), total)
                break
            counts = _step_counts(stats, batches, plan.packed)
            a = acc[level]
            for key in TOTALS:
                a[key] += counts[key]
            a["steps"] += 1
            a["flops"] += train_flops(model_config, np.asarray(counts["fed_lengths"]))
            last_waiting[level] = counts["waiting"]
        else:
            step = end
    for level, a in acc.items():
        a["waiting"] = last_waiting.get(level, 0)
    return acc, exact


def project(rows: Rows, curriculum: Curriculum, *, batch_size: int, world_size: int = 1,
            grad_accum: int = 1, packed: bool, capacity: int | None = None,
            bin_size: int | None = None, seed: int = 42, total_steps: int,
            truncate_excess: bool = False, model_config: Any, pack: Packer | None = None,
            shuffle: bool = True, steps_per_epoch: int | None = None,
            sample_steps: int = SAMPLE_STEPS,
            cuts_of: Callable[[int], Cuts] | None = None) -> dict[str, Any]:
    """Per level: what its cut does to the data, what its steps feed, and what they cost.

    `batch_size`, `capacity`, `bin_size`: the micro-batch as the trainer builds it (packed:
    bins per micro-batch and tokens per bin, Axolotl's packer passed as `pack`).
    `steps_per_epoch`: optimizer steps per epoch of the loader (default: one epoch).
    Levels are planned at their caps (`max_steps`); with sense_grad a level may end sooner.
    `cuts_of(k)`: level k's cuts as the run computes them (a training run passes its own, which
    also hold back rows a difficulty level does not admit yet); default `cut.level_cuts`.
    """
    if curriculum.is_auto:
        raise ValueError("curriculum.levels: auto; resolve it first (auto.resolve)")
    if packed and pack is None:
        raise ValueError("a packed projection needs the packer (plugin.axolotl_pack)")
    cur, n_levels = curriculum, len(curriculum.levels)
    budget = cur.budget_for(packed)
    per_step = world_size * grad_accum
    last = n_levels - 1
    cuts = [cuts_of(k) if cuts_of is not None else
            level_cuts(rows, L, cur.truncation_of(k), window=cur.segment_window,
                       prompt_cut=cur.prompt_cut, keep_prompt_head=cur.keep_prompt_head,
                       last_level=k == last, truncate_excess=truncate_excess)
            for k, L in enumerate(cur.input_lens)]
    timeline = Timeline(cur.input_lens, [level.max_steps for level in cur.levels])
    for k, c in enumerate(cuts):  # as run.use_data: a filter level that cannot fill a step
        fed = int(c.fed.sum())  # (one example per micro-batch) is skipped, any other is an error
        if fed >= per_step:
            continue
        if cur.truncation_of(k) == "filter" and k < last:
            timeline.max_steps[k] = 0
            continue
        if not fed:
            raise ValueError(f"curriculum.levels[{k}].input_len: no example keeps a trainable "
                             f"token when cut to {cur.input_lens[k]}; raise it")
        raise ValueError(f"curriculum.levels[{k}].input_len: {fed} examples keep a trainable "
                         f"token when cut to {cur.input_lens[k]}, fewer than the {per_step} "
                         "micro-batches of one optimizer step; raise input_len or add data")
    level_of = [timeline.level_at(s) for s in range(total_steps)]

    def new_plan() -> BatchPlan:
        return BatchPlan(rows, batch_size=batch_size, seed=seed, shuffle=shuffle,
                         capacity=capacity if packed else None, bin_size=bin_size,
                         pack=pack if packed else None, budget=budget)

    spe = steps_per_epoch or max(total_steps, 1)
    acc, exact = _simulate(new_plan(), level_of, per_step, spe, cuts, sample_steps, model_config)
    # full length: what the same steps feed without a curriculum
    full_len = int(max(rows.lengths.max(initial=2), cur.input_lens[-1]))
    full = [level_cuts(rows, full_len, "head", prompt_cut=cur.prompt_cut,
                       keep_prompt_head=cur.keep_prompt_head, last_level=True,
                       truncate_excess=truncate_excess)]
    ref_steps = min(total_steps, sample_steps)
    ref, _ = _simulate(new_plan(), [0] * ref_steps, per_step, spe, full, sample_steps,
                       model_config)
    ref = ref[0]
    full_step_flops = ref["flops"] / max(ref["steps"], 1)
    full_token_flops = ref["flops"] / max(ref["tokens"], 1)
    full_tokens = int(rows.lengths.sum())

    levels = []
    for k, level in enumerate(cur.levels):
        a = acc[k]
        steps = level_of.count(k)
        scale = steps / a["steps"] if a["steps"] else 0.0
        out = _outcomes(rows, cuts[k])
        per = {key: (a[key] / a["steps"] if a["steps"] else 0.0)
               for key in ("examples", "tokens", "tokens_cut")}
        step_flops = a["flops"] / a["steps"] if a["steps"] else 0.0
        levels.append({
            "level": k,
            "input_len": level.input_len,
            "truncation": cur.truncation_of(k),
            "max_steps": level.max_steps,
            "min_steps": cur.min_steps(k) if cur.sense_grad is not None and k < last else None,
            "steps": steps,
            **out,
            "share_tokens_kept": out["tokens_kept"] / max(full_tokens, 1),
            "share_tokens_cut": out["tokens_cut"] / max(full_tokens, 1),
            "examples_per_step": per["examples"],
            "tokens_per_step": per["tokens"],
            "tokens_cut_per_step": per["tokens_cut"],
            **{key: int(round(a[key] * scale)) for key in TOTALS},
            "waiting": a["waiting"],
            "flops_per_step": step_flops,
            "flops": step_flops * steps,
            "rel_flops_per_token": (a["flops"] / max(a["tokens"], 1)) / full_token_flops
            if a["tokens"] and full_token_flops else 0.0,
            "rel_flops_per_step": step_flops / full_step_flops if full_step_flops else 0.0,
        })
    flops = sum(lv["flops"] for lv in levels)
    return {
        "levels": levels,
        "total": {
            "steps": total_steps,
            "flops": flops,
            "flops_full_length": full_step_flops * total_steps,
            "ratio": flops / (full_step_flops * total_steps) if full_step_flops and total_steps else 1.0,
            "full_length_examples_per_step": ref["examples"] / max(ref["steps"], 1),
            "full_length_tokens_per_step": ref["tokens"] / max(ref["steps"], 1),
            "exact": exact,
        },
        "settings": {"rows": len(rows), "tokens": full_tokens, "budget": budget,
                     "packed": packed, "batch_size": batch_size, "capacity": capacity,
                     "world_size": world_size, "grad_accum": grad_accum, "seed": seed,
                     "steps_per_epoch": spe, "sense_grad": cur.sense_grad is not None},
    }


def project_run(run: Any, *, max_steps: int, epochs: float, model_config: Any) -> dict[str, Any]:
    """`project` for a training run, with its own rows, plan settings and resolved curriculum.

    `run`: a `run.CurriculumRun` whose train loader is built (its `rows`, `plan`, `sampler`,
    resolved `curriculum`); `max_steps` and `epochs` as given to the trainer, sized into total
    steps as `CurriculumRun.train_loader` sizes them.
    """
    steps_per_epoch = run.sampler.steps_per_epoch
    total_steps = max_steps if max_steps > 0 else math.ceil(epochs * steps_per_epoch)
    plan = run.plan
    projection = project(
        run.rows, run.curriculum, batch_size=plan.batch_size,
        world_size=run.batches_per_step // run.grad_accum, grad_accum=run.grad_accum,
        packed=plan.packed, capacity=plan.capacity, bin_size=plan.bin_size, seed=plan.seed,
        shuffle=plan.shuffle, pack=plan.pack, total_steps=total_steps,
        truncate_excess=run.truncate_excess, model_config=model_config,
        steps_per_epoch=steps_per_epoch, cuts_of=run.cuts)
    projection["curriculum"] = run.curriculum.model_dump(mode="json", exclude_none=True)
    return projection


def write_run_plan(run: Any, output_dir, **kwargs) -> Path | None:
    """Write `<output_dir>/curriculum_plan.json` (`project_run(run, **kwargs)`) for `report`.

    Called once at the start of training, on rank 0. A failure is logged and never stops the
    run: the plan is for reading afterwards, not for training.
    """
    started = time.perf_counter()
    path = Path(output_dir) / PLAN_FILE
    try:
        projection = project_run(run, **kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(projection, indent=2) + "\n")
    except Exception as exc:  # noqa: BLE001 - never fail training over the plan
        LOG.warning("curriculum: %s not written: %s: %s", PLAN_FILE, type(exc).__name__, exc)
        return None
    LOG.info("curriculum: projected plan written to %s (%.2f s)", path,
             time.perf_counter() - started)
    return path


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else str(n)


def format_table(projection: dict[str, Any]) -> str:
    """The per-level table and the compute line, as `plan` prints them."""
    n = projection["settings"]["rows"]
    head = ("level", "input_len", "steps", "truncation", "whole", "cut", "prompt_cut", "skipped",
            "waiting", "tokens kept", "tokens cut", "examples/step", "tokens/step",
            "flops/token", "flops/step")
    table = [head]
    for lv in projection["levels"]:
        steps = str(lv["steps"])
        if lv["min_steps"] is not None:
            steps = f"{lv['steps']} ({lv['min_steps']}-{lv['max_steps']})"
        skipped = lv["rows_skipped_no_label"] + lv["rows_skipped_too_long"]
        table.append((
            str(lv["level"]), str(lv["input_len"]), steps, lv["truncation"],
            _share(lv["rows_whole"], n), _share(lv["rows_cut"], n),
            _share(lv["rows_prompt_cut"], n), _share(skipped, n), _share(lv["rows_waiting"], n),
            f"{100 * lv['share_tokens_kept']:.0f}%", f"{100 * lv['share_tokens_cut']:.0f}%",
            f"{lv['examples_per_step']:.1f}", f"{lv['tokens_per_step']:.0f}",
            f"{lv['rel_flops_per_token']:.2f}x", f"{lv['rel_flops_per_step']:.2f}x",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]
    t = projection["total"]
    lines.append(
        f"compute: {t['flops']:.3g} FLOPs over {t['steps']} steps, {t['ratio']:.2f}x the same "
        f"steps at full length ({t['flops_full_length']:.3g})"
        + ("" if t["exact"] else f"; levels past {SAMPLE_STEPS} steps projected from their mean"))
    return "\n".join(lines)
