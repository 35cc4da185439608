"""`axolotl-curriculum plan CONFIG.yml`: what each level will feed, before training.

Loads the config as `axolotl train` does (Axolotl's `load_cfg`: validation, plugins) and the
tokenized data as `axolotl preprocess` does (`load_datasets`: the prepared copy under
`dataset_prepared_path`, or tokenize and save it), reads the model's config but never its
weights, and projects the curriculum with `projection.project` (the training code's cuts and
plan). No GPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.auto import as_yaml
from ..core.config import MODEL_SCORES, Curriculum
from ..core.errors import CurriculumError
from ..data.rows import difficulty_scores, row_stats
from ..integrations.settings import boundaries, plain, run_settings
from ..run.projection import format_table, project, run_for
from ..run.runlog import dumps

LOCAL_TYPES = {"json", "jsonl", "csv", "parquet", "text", "arrow"}
LOCAL_SUFFIXES = {".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt"}


def _first_line(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic: the first error's own message
        try:
            return str(errors()[0]["msg"]).removeprefix("Value error, ")
        except Exception:  # noqa: BLE001 - fall back to the text
            pass
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise CurriculumError(f"config {path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CurriculumError(f"config {path}: not readable YAML ({_first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise CurriculumError(f"config {path}: expected a mapping of Axolotl settings, "
                              f"got {raw!r:.60}")
    return raw


def check_dataset_paths(raw: dict, config: Path) -> None:
    """A local dataset file that is not there: say so before Axolotl tries the Hub with it."""
    for i, ds in enumerate(raw.get("datasets") or []):
        if not isinstance(ds, dict) or not isinstance(ds.get("path"), str) or ds.get("data_files"):
            continue
        path = Path(ds["path"]).expanduser()
        local = (ds.get("ds_type") in LOCAL_TYPES or path.suffix in LOCAL_SUFFIXES
                 or ds["path"].startswith(("/", "./", "../", "~")))
        if local and not path.exists():
            raise CurriculumError(f"{config}: datasets[{i}].path: {ds['path']} does not exist")


def load(config: Path) -> tuple[Any, Any]:
    """(Axolotl cfg, training data) as `axolotl train` / `axolotl preprocess` would have them.

    Axolotl's usage telemetry is off for `plan` (it only reads data; offline, the telemetry
    client once held a plan for minutes): set AXOLOTL_DO_NOT_TRACK=0 to keep it on."""
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.utils.trainer import disable_datasets_caching

    if not os.environ.get("AXOLOTL_CURRICULUM_VERBOSE"):  # the table, not Axolotl's config dump
        for handler in logging.getLogger("axolotl").handlers:
            handler.setLevel(logging.WARNING)

    try:
        cfg = load_cfg(str(config))
    except Exception as exc:  # noqa: BLE001 - any rejection of the config is the user's to fix
        raise CurriculumError(f"config {config}: {_first_line(exc)}") from None
    if cfg.rl or cfg.pretraining_dataset or cfg.streaming:
        raise CurriculumError(f"config {config}: plan reads a prepared SFT dataset; rl, streaming "
                              "and pretraining_dataset configs are not supported")
    try:
        with disable_datasets_caching():
            meta = load_datasets(cfg=cfg)
    except Exception as exc:  # noqa: BLE001
        raise CurriculumError(f"config {config}: could not load the training data: "
                              f"{_first_line(exc)}") from None
    return cfg, meta


def model_config(cfg) -> Any:
    """The model's config only (sizes for FLOPs), never its weights."""
    try:
        from axolotl.loaders.utils import load_model_config

        return load_model_config(cfg)
    except ImportError:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(cfg.base_model_config or cfg.base_model,
                                          trust_remote_code=cfg.trust_remote_code is True)


def steps_per_epoch(cfg, dataset, per_step: int, packed: bool) -> int:
    """Optimizer steps in one epoch of the curriculum's loader (as the trainer sizes it)."""
    if packed:
        from axolotl.utils.trainer import calculate_total_num_steps

        total = calculate_total_num_steps(cfg, dataset, update=False)
        return max(1, int(total / max(float(cfg.num_epochs or 1), 1e-9)))
    n_batches = len(dataset) // cfg.micro_batch_size
    return max(1, n_batches // per_step)


def collator_multiple(cfg) -> int | None:
    """The multiple Axolotl's train collator pads a micro-batch's width to, as its builder sets
    it (core/builders/causal.py): 64 (or `pad_to_multiple_of`), about sequence_len with
    `pad_to_sequence_len: true`, none with `pad_to_sequence_len: false` or batch flattening."""
    if cfg.batch_flattening or cfg.pad_to_sequence_len is False:
        return None
    multiple = int(cfg.pad_to_multiple_of or 64)
    return multiple * -(-int(cfg.sequence_len) // multiple) if cfg.pad_to_sequence_len else multiple


def check_block(raw: dict, config: Path) -> None:
    """What `axolotl train` would not say: a misspelled `curriculum:`, a block it would drop
    unread (the plugin not listed); and the block's own message, before Axolotl loads."""
    from ..integrations.plugin import PLUGIN, lists_plugin, misspelled_key

    if misspelled_key(raw):
        raise CurriculumError(f"config {config}: {misspelled_key(raw)}")
    if "curriculum" in raw and not lists_plugin(raw):  # Axolotl would drop the block unread
        raise CurriculumError(f"config {config}: curriculum: is ignored by axolotl train: plugins: "
                              f"does not list the plugin; add `plugins: [{PLUGIN}]`")
    if raw.get("curriculum") is not None:
        try:
            Curriculum.model_validate(raw["curriculum"])
        except ValueError as exc:
            raise CurriculumError(f"config {config}: {_first_line(exc)}") from None


def planned_run(cfg, meta, curriculum: Curriculum, config: Path, settings: dict):
    """The `CurriculumRun` training would build on this data: `settings` (`run_settings`), and
    what only a projection needs beside them: the loader's seed and order, Axolotl's packer,
    the collator's padding, the difficulty scores. Returns (run, rows, scores)."""
    from ..integrations.plugin import axolotl_pack

    mask, turn_ids = boundaries(cfg, curriculum)
    rows = row_stats(meta.train_dataset, mask, turn_ids)
    scores = None
    if curriculum.difficulty is not None:
        if curriculum.difficulty.score in MODEL_SCORES:
            raise CurriculumError(
                f"config {config}: curriculum.difficulty: plan loads no model weights, so it "
                f"cannot score {curriculum.difficulty.score!r}; plan with a CPU score (rarity, "
                "compression, ...) to see the admitted shares")
        scores = difficulty_scores(meta.train_dataset, curriculum.difficulty, mask)
    seed = cfg.data_seed if cfg.data_seed is not None else (cfg.seed if cfg.seed is not None else 42)
    run = run_for(rows, curriculum, **settings, seed=int(seed),
                  shuffle=not cfg.curriculum_sampling,
                  pack=axolotl_pack if settings["packed"] else None,
                  total_steps=int(meta.total_num_steps), scores=scores,
                  pad_to_multiple_of=collator_multiple(cfg))
    return run, rows, scores


def show(projection: dict, run, cfg, meta, settings: dict, block: dict | None,
         scored: bool) -> None:
    """Print the plan: the run's line, the per-level table, the difficulty score's view (added
    to `projection`) and, with `levels: auto`, the levels it chose."""
    s = projection["settings"]
    print(f"plan: {projection['config']}: {s['rows']} rows, {s['tokens']} tokens, sequence_len "
          f"{settings['sequence_len']}, {projection['total']['steps']} optimizer steps, budget "
          f"{s['budget']}, {'packed' if settings['packed'] else 'not packed'}, "
          f"{settings['world_size']} rank(s) x {settings['grad_accum']} accumulation")
    print(format_table(projection))
    if scored:
        from axolotl.loaders import load_tokenizer

        projection["difficulty"] = difficulty_view(run, meta.train_dataset, load_tokenizer(cfg))
        print(format_difficulty(projection["difficulty"]))
    if projection["auto"]:
        why = ("no curriculum: block (the plugin does nothing without one); levels: auto "
               "would choose" if block is None else "levels: auto chooses")
        print(f"\n# {why}:\n{as_yaml(run.curriculum)}")


def plan(config: str | os.PathLike, out: str | os.PathLike | None = None,
         world_size: int | None = None) -> dict:
    """Load `config` and its data as training would, project the run, print it (and write it
    into `out`). Returns the projection."""
    config = Path(config)
    raw = read_yaml(config)
    check_dataset_paths(raw, config)
    check_block(raw, config)
    cfg, meta = load(config)
    block = plain(cfg.curriculum) if cfg.curriculum else None
    curriculum = Curriculum.model_validate(block or {"levels": "auto"})
    settings = run_settings(cfg, world_size)
    run, rows, scores = planned_run(cfg, meta, curriculum, config, settings)
    per_step = settings["world_size"] * settings["grad_accum"]
    projection = project(run, total_steps=int(meta.total_num_steps), model_config=model_config(cfg),
                         steps_per_epoch=steps_per_epoch(cfg, meta.train_dataset, per_step,
                                                         settings["packed"]))
    projection["config"] = str(config)
    projection["curriculum"] = run.curriculum.model_dump(mode="json", exclude_none=True)
    projection["auto"] = curriculum.is_auto
    projection["lengths"] = rows.lengths.tolist()
    show(projection, run, cfg, meta, settings, block, scored=scores is not None)
    if out is not None:
        write(projection, Path(out))
    return projection


def difficulty_view(run, dataset, tokenizer, n: int = 3, chars: int = 70) -> dict:
    """What the difficulty score means on this data: its spread, each level's admitted share
    and score range, and decoded examples from both ends of what each level admits."""
    from ..core.difficulty import admitted

    scores = run.scores

    def text(row: int) -> str:
        decoded = tokenizer.decode(dataset[int(row)]["input_ids"][:48], skip_special_tokens=True)
        return " ".join(decoded.split())[:chars]

    levels = []
    for k in range(len(run.curriculum.levels)):
        share = run.curriculum.admit_of(k)
        rows = np.flatnonzero(admitted(scores, share))
        ranked = rows[np.argsort(scores[rows], kind="stable")]
        levels.append({"level": k, "admit": share, "admitted": len(rows),
                       "score_min": float(scores[ranked[0]]), "score_max": float(scores[ranked[-1]]),
                       "easiest": [text(r) for r in ranked[:n]],
                       "hardest": [text(r) for r in ranked[-n:][::-1]]})
    finite = scores[np.isfinite(scores)]
    return {"score": run.curriculum.difficulty.score, "rows": len(scores),
            "quantiles": {q: float(np.quantile(finite, q / 100)) for q in (0, 10, 50, 90, 100)},
            "levels": levels}


def format_difficulty(view: dict) -> str:
    q = view["quantiles"]
    lines = [f"\ndifficulty: {view['score']} (lower is easier); over {view['rows']} examples: "
             f"min {q[0]:.3g}, p10 {q[10]:.3g}, median {q[50]:.3g}, p90 {q[90]:.3g}, max {q[100]:.3g}"]
    for lv in view["levels"]:
        lines.append(f"  level {lv['level']} admits {lv['admitted']} ({100 * lv['admit']:.0f}%), "
                     f"scores {lv['score_min']:.3g} .. {lv['score_max']:.3g}")
        lines += [f"    easiest: {t!r}" for t in lv["easiest"]]
        lines += [f"    hardest: {t!r}" for t in lv["hardest"]]
    return "\n".join(lines)


def write(projection: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in projection.items() if k != "lengths"}
    (out / "plan.json").write_text(dumps(data, indent=2) + "\n")
    figure(projection, out / "plan.png")
    print(f"plan: wrote {out / 'plan.json'} and {out / 'plan.png'}")


def figure(projection: dict, path: Path) -> None:
    """The length distribution with each level's input_len; each level's outcome shares."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = np.asarray(projection["lengths"])
    levels = projection["levels"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    lengths = np.maximum(lengths, 1)
    low = max(1.0, min(lengths.min(), min(lv["input_len"] for lv in levels)) / 1.5)
    bins = np.logspace(np.log10(low), np.log10(max(lengths.max(), 2) * 1.1), 50)
    ax1.hist(lengths, bins=bins, color="#8fa8c8")
    ax1.set_xscale("log")
    ax1.set_xlabel("row length (tokens, log scale)")
    ax1.set_ylabel("rows")
    for lv in levels:
        ax1.axvline(lv["input_len"], color="#c0392b", linestyle="--", linewidth=1)
        ax1.text(lv["input_len"], ax1.get_ylim()[1] * 0.95, f" {lv['level']}: {lv['input_len']}",
                 color="#c0392b", fontsize=8, va="top")
    ax1.set_title("lengths and each level's input_len")
    parts = [("rows_whole", "whole", "#2e7d32"), ("rows_cut", "cut", "#f9a825"),
             ("rows_prompt_cut", "prompt cut", "#ef6c00"),
             ("rows_skipped_no_label", "skipped: no label", "#6d4c41"),
             ("rows_skipped_too_long", "skipped: too long", "#b71c1c"),
             ("rows_waiting", "waiting", "#90a4ae")]
    n = max(projection["settings"]["rows"], 1)
    names = [f"{lv['level']}: {lv['input_len']}" for lv in levels]
    left = np.zeros(len(levels))
    for key, label, color in parts:
        share = np.array([lv[key] / n for lv in levels])
        ax2.barh(names, share, left=left, color=color, label=label)
        left += share
    ax2.invert_yaxis()
    ax2.set_xlim(0, 1)
    ax2.set_xlabel("share of rows")
    ax2.set_title("what each level does to the rows")
    ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(config: str, out: str | None = None, world_size: int | None = None) -> int:
    plan(config, out, world_size)
    return 0

