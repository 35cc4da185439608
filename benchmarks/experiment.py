"""The experiment: does a staged input length save compute, calm training, change the model?

    .venv/bin/python benchmarks/experiment.py                  # default preset, <= 30 min, 2 cores
    .venv/bin/python benchmarks/experiment.py --preset full    # docs/results.md (hours; resumable)
    .venv/bin/python benchmarks/experiment.py --size gpu       # a larger model, on a GPU machine
    .venv/bin/python benchmarks/experiment.py --size real      # SmolLM2-135M, LoRA, chat data
    .venv/bin/python benchmarks/experiment.py --train my.jsonl --test my_test.jsonl --format alpaca

Every run goes through the real `axolotl train`. In the fine-tuning setting a base model is
pretrained once on general text (man pages) and fine-tuned on an instruction set (the standard
library's docstrings, plus long-range recall rows). The baseline and the staircase are tuned over
a (learning rate x warmup) grid; the other arms run at the tuned baseline's settings. Compute to
target is the FLOPs (and tokens) to reach the tuned baseline's best eval loss, with 95% intervals
over seeds. Runs are cached under --work by (arm, seed, settings, data): rerunning resumes, and
adding an arm (study/arms.py) trains only that arm. Writes docs/results.md and its PNGs.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from study import data as datasets
from study.arms import CORE, EXTEND, EXTRA, RATIOS, RATIOS_FINETUNE, arms, extend_arms
from study.models import fresh_model, pretrained
from study.report import write_report
from study.runs import Knobs, Run, Setting, prepare, train

SIZES = {
    "small": dict(vocab=4096, hidden=128, layers=4, seq=512, pretrain_steps=600, pretrain_lr=3e-3,
                  pretrain_mbs=4, steps=120, mbs=2, lr=1e-3, eval_every=12, train_rows=4000,
                  test_rows=160, scratch_hidden=64, scratch_layers=2, scratch_seq=256,
                  scratch_steps=160, scratch_lr=2e-3,
                  # context extension (--settings extend): pretrained at `base` tokens (2 layers x
                  # 64: attention ~90% of the FLOPs at 4096), extended 16x
                  extend=dict(vocab=1024, hidden=64, layers=2, base=256, seq=4096,
                              pretrain_steps=3000, pretrain_lr=3e-3, pretrain_mbs=16, steps=60,
                              mbs=1, accum=4, lr=1e-3, eval_every=10, test_docs=16,
                              # half the pretraining rows passkey rows: at a quarter, this model
                              # had not learned to copy the key after 2000 steps (0% at 100
                              # tokens); 300 more steps at a half: 50%
                              passkey_share=0.25, pretrain_passkey_share=0.5, digits=2)),
    # a plumbing check of every section in a few minutes (numbers meaningless)
    "tiny": dict(vocab=1024, hidden=32, layers=2, seq=256, pretrain_steps=30, pretrain_lr=3e-3,
                 pretrain_mbs=2, steps=24, mbs=2, lr=1e-3, eval_every=6, train_rows=600,
                 test_rows=40, scratch_hidden=32, scratch_layers=2, scratch_seq=128,
                 scratch_steps=24, scratch_lr=2e-3,
                 extend=dict(vocab=512, hidden=32, layers=2, base=256, seq=2048, pretrain_steps=40,
                             pretrain_lr=3e-3, pretrain_mbs=4, steps=12, mbs=1, accum=4,
                             lr=1e-3, eval_every=6, test_docs=4, passkey_share=0.25,
                             pretrain_passkey_share=0.5, digits=2)),
    # SmolLM2-135M-Instruct (testing/real_model.py) with LoRA on docstring chats (bf16 on CPU)
    "real": dict(seq=256, steps=120, mbs=2, lr=2e-4, eval_every=25, train_rows=2000,
                 test_rows=40),
    "gpu": dict(vocab=16384, hidden=512, layers=8, seq=2048, pretrain_steps=4000, pretrain_lr=1e-3,
                pretrain_mbs=16, steps=1500, mbs=8, lr=2e-4, eval_every=50, train_rows=40000,
                test_rows=400, scratch_hidden=512, scratch_layers=8, scratch_seq=1024,
                scratch_steps=2000, scratch_lr=6e-4, axolotl=dict(bf16=True, tf32=True)),
}
PRESETS = {
    # fine-tuning only; the grid for the baseline and the staircase; the other arms once tuned;
    # shorter runs (80 steps; the same data and base model) so ~30 runs fit in ~30 min on 2 cores
    "default": dict(settings=("finetune",), seeds=3, headline_seeds=3, arms=CORE,
                    grid_lr=(1.0, 4.0), grid_warmup=(0.02, 0.2), sweep_lr=(), schedules=False,
                    size=dict(steps=80, eval_every=10),
                    # --settings extend (~30 min): the jump, staged_rope and the jump with the
                    # staged arms' warmup, 2 seeds, one learning rate and warmup
                    per_setting={"extend": dict(arms=("baseline", "staged_rope", "jump_warmup"),
                                                seeds=2, headline_seeds=2, grid_lr=(1.0,),
                                                grid_warmup=(0.05,))}),
    # context extension, every arm (~80 min on 2 cores): 2 seeds, one learning rate and warmup
    "extend": dict(settings=("extend",), seeds=2, headline_seeds=2, arms=EXTEND, grid_lr=(1.0,),
                   grid_warmup=(0.05,), sweep_lr=(), schedules=False),
    # + 5 seeds for the headline, the stability sweep (2 seeds) and the schedules, with the
    # extra arms (auto, difficulty scores and their random control), in the fine-tuning and the
    # from-scratch settings (there one_word, the arm that led, gets 5 seeds too); LoRA with the
    # arms that decide
    "full": dict(settings=("finetune", "scratch", "lora", "extend"), seeds=3, headline_seeds=5,
                 arms=CORE + EXTRA, grid_lr=(0.5, 1.0, 2.0, 4.0), grid_warmup=(0.02, 0.2),
                 sweep_lr=(8.0, 16.0, 32.0, 64.0, 128.0), sweep_seeds=2, schedules=True,
                 # from scratch also without gradient clipping (max_grad_norm 0)
                 per_setting={"scratch": dict(schedules=False, headline=("one_word", "one_length"),
                                              sweep_clip=(None, 0.0)),
                              # every extension arm, 3 seeds (5 for the jump and staged_rope,
                              # both tuned on the grid), the stability sweep x2..x16
                              "extend": dict(arms=EXTEND, tuned=("baseline", "staged_rope"),
                                             grid_lr=(0.5, 1.0, 2.0), grid_warmup=(0.05, 0.2),
                                             sweep_lr=(2.0, 4.0, 8.0, 16.0), schedules=False),
                              "lora": dict(arms=("baseline", "staircase", "warmup_shuffle"),
                                           grid_warmup=(0.2,), headline_seeds=3, sweep_lr=(),
                                           schedules=False)}),
    # issue 26: the stability sweep at length ratios 4, 16, 64 (and a ramp from 8 tokens), from
    # scratch, around where the full preset's baseline first blew up (x64 stable, x128 not
    # without warmup; x256 the top), with and without warmup, 3 seeds a cell: ~190 runs, ~1 h
    # on 2 cores (runs ~41 s, two at a time). --settings finetune: fine-tuning's runs cost ~4x,
    # so 80 steps (the default preset's; the base model unchanged), 4 evals on 48 of the 160
    # held-out rows (evals were ~half a run's time), the full preset's
    # tuned LR x2 and 20% warmup (no grid), one seed at x1, the control at 64x only, and each
    # condition swept at the rates either side of the full preset's first baseline blow-up
    # (x8 | x16 without warmup, x32 | x64 with): 72 sweep runs, 3 seeds a cell
    "ratios": dict(settings=("scratch",), seeds=3, headline_seeds=3, arms=RATIOS,
                   grid_lr=(0.5, 1.0, 2.0, 4.0), grid_warmup=(0.02, 0.2), sweep_seeds=3,
                   sweep_arms=RATIOS, schedules=False, sweep_lr=(),
                   per_setting={"scratch": dict(sweep_lr=(64.0, 128.0, 256.0)),
                                "finetune": dict(
                                    arms=RATIOS_FINETUNE, sweep_arms=RATIOS_FINETUNE,
                                    grid_lr=(2.0,), grid_warmup=(0.2,), seeds=1,
                                    headline_seeds=1,
                                    sweep_lr={"no_warmup": (8.0, 16.0), "warmup": (32.0, 64.0)},
                                    size=dict(steps=80, eval_every=20, eval_rows=48))}),
    # the real model (--size real): the arms that decide, no tuning grid, 3 seeds
    "real": dict(settings=("real",), seeds=3, headline_seeds=3,
                 arms=("baseline", "staircase", "warmup_shuffle"), grid_lr=(1.0,),
                 grid_warmup=(0.1,), sweep_lr=(), schedules=False),
    "smoke": dict(settings=("finetune", "scratch", "lora"), seeds=2, headline_seeds=2,
                  arms=("baseline", "staircase", "one_word", "warmup_shuffle"), grid_lr=(1.0,),
                  grid_warmup=(0.02, 0.2), sweep_lr=(8.0,), schedules=True),
}
TUNED = ("baseline", "staircase")  # the arms tuned over the grid


def settings(name: str, work: Path, size: dict, args) -> Setting:
    extra = tuple(size.get("axolotl", {}).items())  # the size's own Axolotl keys (bf16 on a GPU)
    if args.train or args.datasets:
        if not args.model and not args.train:
            raise SystemExit("experiment: --datasets needs --model (the base model to fine-tune)")
        for flag in ("train", "test", "datasets"):
            if getattr(args, flag) and not Path(getattr(args, flag)).is_file():
                raise SystemExit(f"experiment: --{flag} {getattr(args, flag)}: no such file")
        data = datasets.user_data(Path(args.train) if args.train else None,
                                  Path(args.test) if args.test else None, args.format,
                                  Path(args.datasets) if args.datasets else None)
        model = Path(args.model) if args.model else pretrained(
            work, {**data, "pretrain": data["train"]}, size)
        return Setting(name, model, data, size["seq"], size["steps"], size["mbs"], size["lr"],
                       size["eval_every"], extra)
    if name == "real":
        return real_setting(work, size)
    if name == "extend":
        return extend_setting(work, size["extend"])
    if name == "scratch":
        seq = size["scratch_seq"]
        data = datasets.scratch_data(work / "data-scratch", seq=seq, train_rows=1500,
                                     test_rows=size["test_rows"])
        texts = datasets.read_texts(data["train"])
        model = fresh_model(work / f"scratch-{data['hash']}-{size['scratch_hidden']}", texts,
                            vocab=1024, hidden=size["scratch_hidden"],
                            layers=size["scratch_layers"], seq=seq)
        return Setting(name, model, data, seq, size["scratch_steps"], 2, size["scratch_lr"],
                       size["eval_every"] + size["eval_every"] // 3, extra)
    data = datasets.finetune_data(work / "data-finetune", seq=size["seq"],
                                  train_rows=size["train_rows"], test_rows=size["test_rows"])
    base = pretrained(work, data, size)
    if size.get("eval_rows"):  # after the base model: its data stays the same
        data = datasets.thinned(data, size["eval_rows"])
    setting = Setting(name, base, data, size["seq"], size["steps"], size["mbs"], size["lr"],
                      size["eval_every"], extra)
    if name == "lora":  # LoRA trains a small share of the weights: a higher learning rate
        extra += (("adapter", "lora"), ("lora_r", 16), ("lora_alpha", 32), ("lora_dropout", 0.0),
                  ("lora_target_linear", True),
                  # Axolotl's fused LoRA kernels are Triton (CUDA only)
                  ("lora_mlp_kernel", False), ("lora_qkv_kernel", False), ("lora_o_kernel", False))
        setting = replace(setting, lr=size["lr"] * 5, extra=extra)
    return setting


def real_setting(work: Path, size: dict) -> Setting:
    """SmolLM2-135M-Instruct fine-tuned with LoRA on multi-turn docstring chats in its own
    template (Axolotl's chat_template), held out: chats of other docstrings."""
    from axolotl_curriculum.testing.real_model import build, write_chats

    folder = work / "data-real"
    train = write_chats(folder / "train.jsonl", size["train_rows"], seed=0, part="train")
    test = write_chats(folder / "test.jsonl", size["test_rows"], seed=1, part="test")
    chat = {"type": "chat_template", "ds_type": "json", "field_messages": "messages",
            "roles_to_train": ["assistant"], "train_on_eos": "turn"}
    data = {"train": train, "test": test, "datasets": [{"path": str(train), **chat}],
            "format": "chat_template", "hash": datasets.digest(train, test),
            "describe": "SmolLM2-135M-Instruct, LoRA, docstring chats (held out: other "
                        "docstrings)"}
    extra = (("adapter", "lora"), ("lora_r", 16), ("lora_alpha", 32), ("lora_dropout", 0.0),
             ("lora_target_linear", True), ("lora_mlp_kernel", False),
             ("lora_qkv_kernel", False), ("lora_o_kernel", False),
             ("chat_template", "tokenizer_default"), ("special_tokens", None),
             # bf16 on the CPU (~1.5x faster than fp32 here): the trainer needs use_cpu for it
             ("bf16", True), ("plugins", ["axolotl_curriculum.CurriculumPlugin",
                                          "axolotl_curriculum.testing.cpu_bf16.CpuBf16Plugin"]))
    return Setting("real", build(), data, size["seq"], size["steps"], size["mbs"], size["lr"],
                   size["eval_every"], extra)


def extend_setting(work: Path, e: dict) -> Setting:
    """A llama pretrained here at `base` tokens on standard-library source files and passkey
    rows, extended to `seq` (16x) on other files and longer passkey rows; held out: others."""
    from transformers import AutoTokenizer

    from axolotl_curriculum.core import passkey

    folder = work / "data-extend"
    corpus = datasets.extend_corpus(folder, min_chars=4 * e["seq"], test_docs=e["test_docs"])
    docs = datasets.read_texts(corpus["pretrain_docs"])
    template = [passkey.INTRO, passkey.FILLER * 4, passkey.NEEDLE.format(key="42"),
                passkey.QUESTION + " 42"] * 50
    init = fresh_model(work / f"extend-init-{corpus['hash']}-{e['vocab']}-{e['hidden']}x"
                              f"{e['layers']}", docs + template, vocab=e["vocab"],
                       hidden=e["hidden"], layers=e["layers"], seq=e["base"])
    data = datasets.extend_data(folder, corpus, AutoTokenizer.from_pretrained(init),
                                short=e["base"], seq=e["seq"], passkey_share=e["passkey_share"],
                                pretrain_passkey_share=e["pretrain_passkey_share"],
                                digits=e["digits"])
    base = pretrained(work, data, {**e, "seq": e["base"],
                                   "axolotl": {"excess_length_strategy": "truncate"}}, init=init)
    # 4 packed rows a step (accumulated): short_share 0.25 keeps one of them short; eval
    # batches no larger than the held-out set (Axolotl drops the last incomplete one)
    return Setting("extend", base, data, e["seq"], e["steps"], e["mbs"], e["lr"],
                   e["eval_every"], (("gradient_accumulation_steps", e["accum"]),
                                     ("eval_batch_size", min(8, e["test_docs"]))))


def arms_for(setting: Setting) -> dict[str, dict]:
    if setting.name != "extend":
        return arms(setting.seq, setting.steps)
    base = setting.data["base"]
    every = setting.eval_every  # the gate decides at probe steps: as often as it evaluates
    lengths = [L for L in (512, 1024, 2048, 4096, 8192) if base < L <= 2 * setting.seq]
    probes = {"every": every, "passkey": {"lengths": lengths, "depths": [0.25, 0.75], "rows": 2,
                                          "digits": setting.data["digits"]},
              "position_loss": {"rows": 4, "first_bucket": base},
              "short": {"rows": 16, "input_len": base}}
    return extend_arms(setting.seq, setting.steps, base, probes)


class Runner:
    """Trains runs `jobs` at a time; remembers every run it was asked for."""

    def __init__(self, work: Path, jobs: int):
        self.work, self.jobs, self.done = work, jobs, []

    def __call__(self, runs: list[Run]) -> list[Run]:
        with futures.ThreadPoolExecutor(self.jobs) as pool:
            finished = list(pool.map(lambda r: train(r, self.work), runs))
        for r in finished:
            print(f"  {r.name}: {'cached' if r.cached else ('ok' if r.ok else 'FAILED')}"
                  f"{'' if r.cached else f' in {r.seconds:.0f}s'}", flush=True)
        self.done += finished
        return finished


def sweep_multiples(sweep_lr, warmup: float) -> list[tuple[float, tuple]]:
    """(warmup, LR multiples) for the sweep's two conditions, no warmup and the tuned warmup.
    `sweep_lr`: the multiples of both, or {"no_warmup": ..., "warmup": ...} where the two blow
    up at different learning rates (fine-tuning: x16 without warmup, x64 with) and the runs
    would be wasted far from either."""
    own = sweep_lr if isinstance(sweep_lr, dict) else {"no_warmup": sweep_lr, "warmup": sweep_lr}
    return [(0.0, tuple(own["no_warmup"])), (warmup, tuple(own["warmup"]))]


def study(setting: Setting, preset: dict, chosen: list[str], run: Runner) -> dict:
    """One setting: the grid, the seeds at the tuned settings, the sweeps; the runs by role."""
    from study.measures import best

    all_arms = arms_for(setting)
    grid = [Knobs(lr, wu) for lr in preset["grid_lr"] for wu in preset["grid_warmup"]]
    tuned_arms = [a for a in preset.get("tuned", TUNED) if a in chosen]
    grid_runs = run([Run(setting, a, all_arms[a], 0, k) for a in tuned_arms for k in grid])
    tuned = {}
    for a in tuned_arms:
        mine = [r for r in grid_runs if r.arm == a]
        tuned[a] = min(mine, key=lambda r: best(r.evals) if r.evals else float("inf")).knobs
    equal = tuned.get("baseline", Knobs())
    seeds, head = range(preset["seeds"]), range(preset["headline_seeds"])
    headline = tuple(preset.get("tuned", TUNED)) + tuple(preset.get("headline", ()))
    jobs = [Run(setting, a, all_arms[a], s, equal) for a in chosen for s in
            (head if a in headline else seeds)]
    for a in (a for a in tuned_arms if a != "baseline"):  # and at its own tuning, if not equal
        if tuned[a] != equal:
            jobs += [Run(setting, a, all_arms[a], s, tuned[a]) for s in head]
    main = run(jobs)
    sweep = []
    swept = [a for a in preset.get("sweep_arms", tuned_arms) if a in chosen]
    if preset["sweep_lr"]:
        for wu, mults in sweep_multiples(preset["sweep_lr"], equal.warmup):
            sweep += [Run(setting, a, all_arms[a], s, Knobs(equal.lr_mult * m, wu, clip=clip))
                      for clip in preset.get("sweep_clip", (None,))
                      for a in swept for m in mults
                      for s in range(preset.get("sweep_seeds", 2))]
        sweep = run(sweep)
    schedules = []
    if preset["schedules"]:
        schedules = run([Run(setting, a, all_arms[a], s, replace(equal, schedule="wsd"))
                         for a in tuned_arms for s in seeds])
    return {"setting": setting, "grid": grid_runs, "tuned": tuned, "equal": equal, "main": main,
            "sweep": sweep, "schedules": schedules, "grid_knobs": grid}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="default")
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--seeds", type=int, help="seeds per arm (default: the preset's)")
    ap.add_argument("--jobs", type=int, default=2, help="runs trained at once")
    ap.add_argument("--work", default=str(Path.home() / ".cache/axolotl-curriculum/experiment"),
                    help="where runs are cached (rerunning resumes)")
    ap.add_argument("--report", default="docs", help="where results.md and the plots go")
    ap.add_argument("--train", help="your own training rows (jsonl)")
    ap.add_argument("--test", help="your own held-out rows (jsonl)")
    ap.add_argument("--datasets", help="a YAML file with an Axolotl `datasets:` list to train on "
                    "(with --model; held out: --test, else 5%% of the data)")
    ap.add_argument("--format", default="alpaca", choices=("alpaca", "completion"),
                    help="the Axolotl dataset type of --train/--test")
    ap.add_argument("--model", help="with --train: the base model to fine-tune (default: one "
                    "pretrained here on --train)")
    ap.add_argument("--arms", nargs="*", help="the arms (default: the preset's; the baseline "
                    "always runs)")
    ap.add_argument("--settings", nargs="*",
                    choices=("finetune", "scratch", "lora", "real", "extend"),
                    help="a subset of the preset's settings")
    args = ap.parse_args()
    if args.seeds is not None and args.seeds < 1:
        ap.error(f"--seeds {args.seeds}: at least 1 (3 or more for intervals)")
    if args.size == "gpu":
        import torch

        if not torch.cuda.is_available():
            ap.error("--size gpu trains in bf16 on a CUDA GPU and none is visible here; "
                     "use --size small (the default) on CPU")
    if args.size == "real" and args.preset == "default":
        args.preset = "real"
    preset = dict(PRESETS[args.preset])
    if args.seeds:
        preset.update(seeds=args.seeds, headline_seeds=max(args.seeds, preset["headline_seeds"]))
    work = Path(args.work) / args.size
    work.mkdir(parents=True, exist_ok=True)
    known = set(arms(64, 100)) | set(EXTEND)
    unknown = set(args.arms or ()) - known
    if unknown:
        ap.error(f"--arms: unknown {sorted(unknown)}; known: {sorted(known)}")
    started = time.perf_counter()
    runner = Runner(work, args.jobs)
    user = bool(args.train or args.datasets)
    names = ("user",) if user else args.settings or preset["settings"]
    results = []
    for name in names:
        local = {**preset, **preset.get("per_setting", {}).get(name, {})}
        # the preset's size keys, a setting's own over them (the ratios preset's fine-tuning)
        size = {**SIZES[args.size], **(local.get("size", {}) if args.size == "small" else {})}
        setting = settings(name, work, size, args)
        print(f"experiment: setting {name} ({setting.data['describe']})", flush=True)
        prepare(setting, work)
        picked = ["baseline"] + [a for a in args.arms or local["arms"] if a != "baseline"]
        results.append(study(setting, local, picked, runner))
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])
    write_report(results, Path(args.report), command=command, started=started,
                 runner=runner, preset=args.preset, cores=os.cpu_count(),
                 left_out=() if user else tuple(n for n in preset["settings"]
                                                      if n not in names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
