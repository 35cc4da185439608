"""One training run through the real `axolotl train`, cached by what decides its outcome.

A run's folder is named by a hash of its Axolotl config (arm's curriculum, seed, learning rate,
warmup, schedule, model, data hash, ...): a finished run (`result.json` written) is read back
instead of trained again, so an interrupted experiment resumes and a new arm runs alone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from axolotl_curriculum.core.names import EVAL_FILE, LOG_FILE, read_jsonl
from axolotl_curriculum.testing import axolotl_env, base_config

from .arms import WARMUP

RESULT = "result.json"


@dataclass(frozen=True)
class Setting:
    """What every arm of one comparison shares."""
    name: str                # "finetune", "scratch", "lora", ...
    model: Path
    data: dict               # data.finetune_data() / scratch_data() / user_data()
    seq: int
    steps: int
    mbs: int
    lr: float
    eval_every: int
    extra: tuple = ()        # more Axolotl keys, as (key, value) pairs (hashable)


@dataclass(frozen=True)
class Knobs:
    """What the grid and the sweeps vary, relative to the setting."""
    lr_mult: float = 1.0
    warmup: float = 0.05     # share of the steps
    schedule: str = "cosine"  # or "wsd": constant after warmup, a linear cool-down over 20%
    clip: float | None = None  # max_grad_norm (0: none); None: Axolotl's default, 1.0

    @property
    def tag(self) -> str:
        return (f"lr{self.lr_mult:g}-wu{self.warmup:g}"
                + ("" if self.schedule == "cosine" else f"-{self.schedule}")
                + ("" if self.clip is None else f"-clip{self.clip:g}"))

    @property
    def condition(self) -> str:
        """The sweep's condition in words (all but the learning rate)."""
        return (f"warmup {self.warmup:.0%}" if self.warmup else "no warmup") + (
            "" if self.clip is None else ", no clipping" if self.clip == 0
            else f", clip {self.clip:g}")


@dataclass
class Run:
    setting: Setting
    arm: str
    curriculum: dict
    seed: int
    knobs: Knobs = Knobs()
    out: Path | None = None
    seconds: float = 0.0
    ok: bool = False
    records: list[dict] = field(default_factory=list)   # rank 0's curriculum_log.jsonl
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, eval loss)
    walls: list[tuple[int, float]] = field(default_factory=list)  # (step, s since training began)
    before: dict = field(default_factory=dict)  # the probes before step 1 (the model as it came)
    cached: bool = False

    @property
    def name(self) -> str:
        return f"{self.setting.name}/{self.arm}-s{self.seed}-{self.knobs.tag}"

    def config(self) -> dict:
        s, k = self.setting, self.knobs
        fmt = s.data["format"]
        datasets = s.data.get("datasets") or [
            {"path": str(s.data["train"]), "type": fmt, "ds_type": "json"}]
        test = ([{"path": str(s.data["test"]), "type": fmt, "ds_type": "json", "split": "train"}]
                if s.data.get("test") else None)
        curriculum = dict(self.curriculum)
        share = curriculum.pop(WARMUP, k.warmup)  # an arm with its own warmup (arms.py)
        warmup = max(1, round(s.steps * share)) if share > 0 else 0
        cfg = base_config(
            s.model, "DATA", "OUT", sequence_len=s.seq, max_steps=s.steps,
            micro_batch_size=s.mbs, learning_rate=s.lr * k.lr_mult, seed=self.seed,
            data_seed=self.seed, logging_steps=10, warmup_steps=warmup, use_tensorboard=True,
            excess_length_strategy="truncate", curriculum=curriculum, datasets=datasets,
            test_datasets=test, val_set_size=0 if test else 0.05, eval_strategy="steps",
            eval_steps=s.eval_every, eval_sample_packing=False, eval_batch_size=16,
            train_on_inputs=False,
            dataset_prepared_path=None, save_strategy="no", num_epochs=20)
        if k.schedule == "wsd":
            cfg.update(lr_scheduler="warmup_stable_decay", lr_scheduler_kwargs={
                "num_decay_steps": max(1, s.steps // 5), "decay_type": "linear", "num_stable_steps":
                    s.steps - warmup - max(1, s.steps // 5)})
        if k.clip is not None:
            cfg["max_grad_norm"] = k.clip
        cfg.update(dict(s.extra))
        return cfg

    def key(self) -> str:
        blob = json.dumps({"config": self.config(), "data": self.setting.data["hash"]},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def train(run: Run, work: Path) -> Run:
    """Train `run` (or read its cached result) under work/runs/."""
    run.out = work / "runs" / run.setting.name / f"{run.arm}-s{run.seed}-{run.knobs.tag}-{run.key()}"
    done = run.out / RESULT
    if done.exists():
        saved = json.loads(done.read_text())
        run.seconds, run.ok, run.records = saved["seconds"], saved["ok"], saved["records"]
        run.evals = [tuple(e) for e in saved["evals"]]
        run.walls = [tuple(w) for w in saved["walls"]] if "walls" in saved else read_walls(run.out)
        run.before = read_before(run.out)
        run.cached = True
        return run
    # a run killed part-way left its events and log lines: training into them again would
    # mix two runs' curves (the readers take every event file), so it starts from nothing
    shutil.rmtree(run.out, ignore_errors=True)
    run.out.mkdir(parents=True)
    cfg = run.config()
    cfg["output_dir"] = str(run.out)
    cfg["dataset_prepared_path"] = str(prepared(run.setting, work))
    path = run.out / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    t = time.perf_counter()
    proc = axolotl("train", path)
    run.seconds = time.perf_counter() - t
    (run.out / "train.log").write_text(proc.stdout + proc.stderr)
    lines = read_jsonl(run.out / LOG_FILE)
    if lines:
        run.records = sorted((r for r in lines if r.get("rank", 0) == 0), key=lambda r: r["step"])
    run.evals = read_evals(run.out)
    run.walls = read_walls(run.out)
    run.before = read_before(run.out)
    # a run that diverged still finished: its losses are the result
    run.ok = proc.returncode == 0 and bool(run.records)
    done.write_text(json.dumps({"name": run.name, "seconds": run.seconds, "ok": run.ok,
                                "records": run.records, "evals": run.evals,
                                "walls": run.walls}))
    return run


def axolotl(command: str, config: Path) -> subprocess.CompletedProcess:
    """The real CLI, one process (`--launcher python`: no accelerate launcher to start)."""
    env = {**axolotl_env(), "OMP_NUM_THREADS": "1"}  # two runs share two cores
    launcher = ["--launcher", "python"] if command == "train" else []
    return subprocess.run(["axolotl", command, str(config), *launcher], env=env,
                          capture_output=True, text=True)


def prepared(setting: Setting, work: Path) -> Path:
    return work / "prepared" / f"{setting.name}-{setting.data['hash']}-{setting.seq}"


def prepare(setting: Setting, work: Path) -> None:
    """Tokenize the setting's data once with `axolotl preprocess`, before runs start in
    parallel: every run then loads it (Axolotl keys it by datasets, tokenizer, length)."""
    folder = prepared(setting, work)
    if (folder / "done").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    cfg = Run(setting, "baseline", {"levels": [{"input_len": setting.seq}]}, 0).config()
    cfg.update(output_dir=str(folder / "out"), dataset_prepared_path=str(folder))
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = axolotl("preprocess", path)
    (folder / "preprocess.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"experiment: axolotl preprocess failed, see {folder / 'preprocess.log'}")
    (folder / "done").touch()


def _scalars(out: Path, tag: str) -> list:
    """The trainer's TensorBoard events for `tag` (step, value, wall_time), in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = []
    for ev in (out / "runs").rglob("events.out.tfevents.*") if (out / "runs").exists() else []:
        acc = EventAccumulator(str(ev))
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            events += acc.Scalars(tag)
    return sorted(events, key=lambda e: e.step)


def read_evals(out: Path) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in _scalars(out, "eval/loss")]


def read_before(out: Path) -> dict[str, float]:
    """The probes before step 1 (`probe/...` of curriculum_evals.jsonl's step-0 line)."""
    found = {}
    for line in read_jsonl(out / EVAL_FILE):
        if line.get("step") == 0:
            found.update({k: v for k, v in line.items() if k.startswith("probe/")})
    return found


def read_walls(out: Path) -> list[tuple[int, float]]:
    """Seconds since training began at each logged step, from the events' wall clock: the
    eval before step 1 ends when training begins (else the first logged step is 0 s). Evals
    and probes during training count, as they do for a user."""
    steps = _scalars(out, "eval/loss") + _scalars(out, "train/loss")  # a step's train event
    # (logged before that step's eval) wins: the time the step's weights were there
    if not steps:
        return []
    starts = [e.wall_time for e in steps if e.step == 0]
    t0 = max(starts) if starts else min(e.wall_time for e in steps)
    return sorted({e.step: e.wall_time - t0 for e in steps if e.step > 0}.items())
