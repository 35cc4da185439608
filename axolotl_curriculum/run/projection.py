"""What a curriculum will feed, level by level, before training: the numbers `plan` prints.

It drives the run's own `CurriculumRun` (cuts, level checks, `levels: auto`, difficulty) and
`plan.BatchPlan` over the run's steps with the same seed: the same code training runs, so a
step-scheduled run feeds what this projects. Compute comes from `flops.py`.
Training writes the same projection of its own run to `curriculum_plan.json` (`write_run_plan`),
which `report` puts beside what was fed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..core.config import Curriculum
from ..core.cut import Cuts, Rows, level_cuts
from ..core.flops import activation_bytes, attention_flops, matmul_params, train_flops
from ..core.names import PLAN_FILE, STEP_COUNTS, WAITING
from ..core.plan import BatchPlan, Mix, Packer, main_cuts
from .run import CurriculumRun
from .runlog import dumps

logger = logging.getLogger(__name__)
SAMPLE_STEPS = 2000  # steps simulated per level at most; beyond, the level's mean step counts
# Tests set it: a plan that cannot be written fails the test instead of being logged.
STRICT_ENV = "AXOLOTL_CURRICULUM_STRICT"


def _outcomes(rows: Rows, cuts: Cuts) -> dict[str, int]:
    """What the level does to every row of the data (once each, order aside). A split level
    counts its units: each chunk of a split row whole, each other row as its cut."""
    split = cuts.chunks
    rows_split = len(np.unique(cuts.row_of[split])) if split.any() else 0
    rows = cuts.space or rows
    moved = ((cuts.head > 0) | (cuts.start > 0)) & ~split
    too_long = cuts.too_long
    fed_tokens = cuts.lengths[cuts.fed]
    return {
        "rows_split": rows_split,
        "rows_whole": int((cuts.fed & (cuts.lengths >= rows.lengths) & ~split).sum()),
        "rows_cut": int((cuts.fed & (cuts.lengths < rows.lengths) & ~moved).sum()),
        "rows_prompt_cut": int((cuts.fed & moved).sum()),
        "rows_skipped_no_label": int((~cuts.fed & ~cuts.waits & ~too_long).sum()),
        "rows_skipped_too_long": int((~cuts.fed & too_long).sum()),
        "rows_waiting": int(cuts.waits.sum()),
        "tokens_kept": int(fed_tokens.sum()),
        "tokens_cut": int((rows.lengths[cuts.fed] - fed_tokens).sum()),
    }


def _step_flops(plan: BatchPlan, batches: list, model_config: Any) -> tuple[float, float]:
    """Training FLOPs of one planned step as the collator shapes it, and their attention part.
    Unpacked: every row of a micro-batch runs at its padded width (attention over padding is
    computed, then masked). Packed: each example attends within itself; padding at a row's end
    costs the matmuls."""
    flops = attention = 0.0
    for batch in batches:
        if plan.packed:
            lengths = np.asarray([s[1] + s[3] - s[2] for b in batch for s in b])
            pad = plan.positions(batch) - int(lengths.sum())
            flops += train_flops(model_config, lengths) + 6 * matmul_params(model_config) * pad
        else:
            lengths = np.full(len(batch), plan.positions(batch) // max(len(batch), 1))
            flops += train_flops(model_config, lengths)
        attention += attention_flops(model_config, lengths)
    return flops, attention


def _step_counts(stats: dict) -> dict:
    """One planned step's counts (names.STEP_COUNTS and the waiting gauge)."""
    return {key: int(stats[key]) for key in (*STEP_COUNTS, WAITING)}


def _simulate(plan: BatchPlan, level_of: list[int], per_step: int, steps_per_epoch: int,
              cuts: list[Cuts], sample: int, model_config: Any) -> tuple[dict, bool]:
    """Drive the plan over the run's steps as the loader does, epoch by epoch.

    A level simulated for `sample` steps is left (its remaining steps are projected from their
    mean) and the plan restarts at the next level's first step with a fresh order.
    """
    # per level, summed over its steps: the step counts (the log's `global_<key>` fields)
    acc = {k: {key: 0 for key in (*STEP_COUNTS, "steps", "flops", "attention")}
           for k in range(len(cuts))}
    last_waiting: dict[int, int] = {}
    total, step, restarts, exact = len(level_of), 0, 0, True
    simulated = sum(min(level_of.count(k), sample) for k in range(len(cuts)))
    bar = tqdm(total=simulated, desc="curriculum: planning", unit="step", leave=False,
               disable=simulated < 500)  # a large dataset's plan takes seconds a level
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
            counts = _step_counts(stats)
            a = acc[level]
            for key in STEP_COUNTS:
                a[key] += counts[key]
            a["steps"] += 1
            bar.update()
            flops, attention = _step_flops(plan, batches, model_config)
            a["flops"] += flops
            a["attention"] += attention
            last_waiting[level] = counts[WAITING]
        else:
            step = end
    bar.close()
    for level, a in acc.items():
        a[WAITING] = last_waiting.get(level, 0)
    return acc, exact


def run_for(rows: Rows, block: Curriculum | dict, *, batch_size: int, world_size: int = 1,
            grad_accum: int = 1, packed: bool = False, capacity: int | None = None,
            bin_size: int | None = None, seed: int = 42, shuffle: bool = True,
            pack: Packer | None = None, truncate_excess: bool = False,
            sequence_len: int | None = None, total_steps: int = 1, scores=None,
            pad_to_multiple_of: int | None = None) -> CurriculumRun:
    """The `CurriculumRun` a trainer would build for these rows and settings (`levels: auto`
    resolved, levels that cannot fill a step switched off or refused), as `plan` needs it."""
    run = CurriculumRun(block, ".", world_size=world_size, grad_accum=grad_accum,
                        truncate_excess=truncate_excess)
    plan = BatchPlan(rows, batch_size=batch_size, seed=seed, shuffle=shuffle,
                     capacity=capacity if packed else None, bin_size=bin_size,
                     pack=pack if packed else None, budget=run.curriculum.budget_for(packed),
                     pad_to_multiple_of=pad_to_multiple_of)
    run.use_data(rows, plan, sequence_len=sequence_len, total_steps=total_steps, scores=scores)
    return run


def _full_length(run: CurriculumRun, steps: int, steps_per_epoch: int, sample_steps: int,
                 model_config: Any) -> dict[str, float]:
    """Per step, what the same steps feed and cost without a curriculum: one level as long as
    the longest row (cut only past `sequence_len`), over the first `steps` steps."""
    rows, cur = run.rows, run.curriculum
    full_len = int(max(rows.lengths.max(initial=2), cur.input_lens[-1]))
    full = [level_cuts(rows, full_len, "head", prompt_cut=cur.prompt_cut,
                       keep_prompt_head=cur.keep_prompt_head, last_level=True,
                       truncate_excess=run.truncate_excess)]
    ref, _ = _simulate(run.plan, [0] * steps, run.batches_per_step, steps_per_epoch, full,
                       sample_steps, model_config)
    ref = ref[0]
    n = max(ref["steps"], 1)
    return {"flops_per_step": ref["flops"] / n,
            "flops_per_token": ref["flops"] / max(ref["tokens"], 1),
            "examples_per_step": ref["examples"] / n, "tokens_per_step": ref["tokens"] / n}


def _level(run: CurriculumRun, k: int, a: dict, steps: int, cuts: Cuts | Mix,
           full: dict[str, float], model_config: Any) -> dict[str, Any]:
    """Level `k`'s row: what its cut does to the data, what its `steps` feed (`a`: the sums over
    its simulated steps, scaled to all of them) and what they cost against full length."""
    rows, cur = run.rows, run.curriculum
    level, last = cur.levels[k], len(cur.levels) - 1
    full_tokens = int(rows.lengths.sum())
    scale = steps / a["steps"] if a["steps"] else 0.0
    out = _outcomes(rows, main_cuts(cuts))
    per = {key: (a[key] / a["steps"] if a["steps"] else 0.0)
           for key in ("examples", "tokens", "positions", "tokens_cut")}
    step_flops = a["flops"] / a["steps"] if a["steps"] else 0.0
    return {
        "level": k,
        "input_len": level.input_len,
        "truncation": cur.truncation_of(k),
        "max_steps": level.max_steps,
        "min_steps": cur.min_steps(k) if cur.gated and k < last else None,
        "steps": steps,
        **out,
        "share_tokens_kept": out["tokens_kept"] / max(full_tokens, 1),
        "share_tokens_cut": out["tokens_cut"] / max(full_tokens, 1),
        "examples_per_step": per["examples"],
        "tokens_per_step": per["tokens"],
        "positions_per_step": per["positions"],
        "tokens_cut_per_step": per["tokens_cut"],
        "short_share": a["short_tokens"] / a["tokens"] if a["tokens"] else 0.0,
        **{key: int(round(a[key] * scale)) for key in STEP_COUNTS},
        WAITING: a[WAITING],
        "flops_per_step": step_flops,
        "flops": step_flops * steps,
        "rel_flops_per_token": (a["flops"] / max(a["tokens"], 1)) / full["flops_per_token"]
        if a["tokens"] and full["flops_per_token"] else 0.0,
        "rel_flops_per_step": (step_flops / full["flops_per_step"]
                               if full["flops_per_step"] else 0.0),
        "attention_share": a["attention"] / a["flops"] if a["flops"] else 0.0,
        # the level's largest micro-batch, as the collator shapes it (pre-flight's shape)
        "activation_gb": max((activation_bytes(model_config, r * t) for r, t, _
                              in run.plan.largest_batches([cuts])), default=0.0) / 1e9,
    }


def _total(levels: list[dict], full: dict[str, float], total_steps: int,
           exact: bool) -> dict[str, Any]:
    flops = sum(lv["flops"] for lv in levels)
    full_flops = full["flops_per_step"] * total_steps
    return {
        "steps": total_steps,
        "flops": flops,
        "flops_full_length": full_flops,
        "ratio": flops / full_flops if full["flops_per_step"] and total_steps else 1.0,
        "full_length_examples_per_step": full["examples_per_step"],
        "full_length_tokens_per_step": full["tokens_per_step"],
        "exact": exact,
    }


def _settings(run: CurriculumRun, steps_per_epoch: int) -> dict[str, Any]:
    plan = run.plan
    return {"rows": len(run.rows), "tokens": int(run.rows.lengths.sum()), "budget": plan.budget,
            "packed": plan.packed, "batch_size": plan.batch_size, "capacity": plan.capacity,
            "world_size": run.batches_per_step // run.grad_accum, "grad_accum": run.grad_accum,
            "seed": plan.seed, "steps_per_epoch": steps_per_epoch,
            "sense_grad": run.curriculum.sense_grad is not None}


def project(run: CurriculumRun, *, total_steps: int, model_config: Any,
            steps_per_epoch: int | None = None, sample_steps: int = SAMPLE_STEPS) -> dict[str, Any]:
    """Per level: what its cut does to the data, what its steps feed, and what they cost.

    `run`: a `CurriculumRun` after `use_data` (a training run's own, or `run_for`'s): its rows,
    plan, cuts (difficulty admission included) and timeline are the ones training uses.
    `steps_per_epoch`: optimizer steps per epoch of the loader (default: one epoch).
    Levels are planned at their caps (`max_steps`); with sense_grad a level may end sooner.
    """
    cuts = [run.cuts.fed(k) for k in range(len(run.curriculum.levels))]  # short data mixed in
    level_of = [run.timeline.level_at(s) for s in range(total_steps)]
    spe = steps_per_epoch or max(total_steps, 1)
    acc, exact = _simulate(run.plan, level_of, run.batches_per_step, spe, cuts, sample_steps,
                           model_config)
    full = _full_length(run, min(total_steps, sample_steps), spe, sample_steps, model_config)
    levels = [_level(run, k, acc[k], level_of.count(k), cuts[k], full, model_config)
              for k in range(len(cuts))]
    return {"levels": levels, "total": _total(levels, full, total_steps, exact),
            "settings": _settings(run, spe)}


def project_run(run: CurriculumRun, *, model_config: Any) -> dict[str, Any]:
    """`project` for a training run whose train loader is built (`CurriculumRun.train_loader`:
    its rows, plan, resolved curriculum, total steps and steps per epoch)."""
    projection = project(run, total_steps=run.total_steps, model_config=model_config,
                         steps_per_epoch=run.steps_per_epoch)
    projection["curriculum"] = run.curriculum.model_dump(mode="json", exclude_none=True)
    return projection


def write_run_plan(run: Any, output_dir, **kwargs) -> Path | None:
    """Write `<output_dir>/curriculum_plan.json` (`project_run(run, **kwargs)`) for `report`.

    Called once at the start of training, on rank 0. A failure is logged and never stops the
    run: the plan is for reading afterwards, not for training. With AXOLOTL_CURRICULUM_STRICT=1
    (tests) it is raised instead, so a broken projection fails the test that trained.
    """
    started = time.perf_counter()
    path = Path(output_dir) / PLAN_FILE
    try:
        projection = project_run(run, **kwargs)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(projection, indent=2) + "\n")
    except Exception as exc:  # noqa: BLE001 - never fail training over the plan
        if os.environ.get(STRICT_ENV, "") not in ("", "0"):
            raise
        logger.warning("curriculum: %s not written: %s: %s", PLAN_FILE, type(exc).__name__, exc)
        return None
    logger.info("curriculum: projected plan written to %s (%.2f s)", path,
             time.perf_counter() - started)
    return path


def _gb(gb: float) -> str:
    return f"{gb:.3g} GB" if gb >= 0.1 else f"{gb * 1e3:.3g} MB"


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else str(n)


def format_table(projection: dict[str, Any]) -> str:
    """The per-level table and the compute line, as `plan` prints them."""
    n = projection["settings"]["rows"]
    head = ("level", "input_len", "steps", "truncation", "whole", "cut", "prompt_cut", "skipped",
            "waiting", "tokens kept", "tokens cut", "examples/step", "tokens/step",
            "flops/token", "flops/step", "attention", "activations")
    # positions: what the model runs on, the collator's padding included (only when it pads)
    padded = any(lv["positions_per_step"] - lv["tokens_per_step"] >= 1 for lv in projection["levels"])
    if padded:
        head = (*head[:13], "positions/step", *head[13:])
    short = any(lv.get("short_share") for lv in projection["levels"])
    if short:  # tokens per step from the first level's cuts (short_share)
        head = (*head[:12], "short", *head[12:])
    split = any(lv.get("rows_split") for lv in projection["levels"])
    if split:  # rows fed as chunks (truncation: split), beside the rows cut
        head = (*head[:6], "split", *head[6:])
    table = [head]
    for lv in projection["levels"]:
        steps = str(lv["steps"])
        if lv["min_steps"] is not None:
            steps = f"{lv['steps']} ({lv['min_steps']}-{lv['max_steps']})"
        skipped = lv["rows_skipped_no_label"] + lv["rows_skipped_too_long"]
        table.append((
            str(lv["level"]), str(lv["input_len"]), steps, lv["truncation"],
            _share(lv["rows_whole"], n), _share(lv["rows_cut"], n),
            *([_share(lv["rows_split"], n)] if split else []),
            _share(lv["rows_prompt_cut"], n), _share(skipped, n), _share(lv["rows_waiting"], n),
            f"{100 * lv['share_tokens_kept']:.0f}%", f"{100 * lv['share_tokens_cut']:.0f}%",
            f"{lv['examples_per_step']:.1f}",
            *([f"{100 * lv.get('short_share', 0):.0f}%"] if short else []),
            f"{lv['tokens_per_step']:.0f}",
            *([f"{lv['positions_per_step']:.0f}"] if padded else []),
            f"{lv['rel_flops_per_token']:.2f}x", f"{lv['rel_flops_per_step']:.2f}x",
            f"{100 * lv['attention_share']:.0f}%", _gb(lv["activation_gb"]),
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]
    t = projection["total"]
    lines.append(
        f"compute: {t['flops']:.3g} FLOPs over {t['steps']} steps, {t['ratio']:.2f}x the same "
        f"steps at full length ({t['flops_full_length']:.3g})"
        + ("" if t["exact"] else f"; levels past {SAMPLE_STEPS} steps projected from their mean"))
    return "\n".join(lines)
