"""`attach()`: a curriculum for any transformers `Trainer` (Axolotl's and TRL's are ones).

A thin adapter over `run.CurriculumRun`: it builds the run's train loader from the trainer's
own dataset, collator and sampler settings, reports every micro-batch and optimizer step, adds
the curriculum's metrics to the trainer's log line, and checkpoints the run's state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, SequentialSampler
from transformers import TrainerCallback
from transformers.trainer_utils import seed_worker

from ..core.config import Curriculum
from ..core.errors import CurriculumError
from ..core.names import SCORE_FOLDER, STATE_FILE
from ..core.plan import Packer
from ..run.preflight import PROBE_FIX, full_length_batch, preflight
from ..run.projection import write_run_plan
from ..run.run import CurriculumRun
from .adapter_rope import save_config

logger = logging.getLogger(__name__)


def _packed(args) -> bool:
    return bool(getattr(args, "sample_packing", False)) and not getattr(args, "pretraining", False)


def collator_padding(collator) -> int | None:
    """The multiple a collator pads a micro-batch's width to (None: to its longest row).

    HF's and Axolotl's collators say it in `pad_to_multiple_of` (Axolotl: 64, or about
    sequence_len with `pad_to_sequence_len`); `padding="max_length"` pads to `max_length`."""
    padding = getattr(collator, "padding", True)
    max_length = getattr(collator, "max_length", None)
    if str(getattr(padding, "value", padding)) == "max_length" and max_length:
        return int(max_length)
    multiple = getattr(collator, "pad_to_multiple_of", None)
    return int(multiple) if multiple else None


def train_dataloader(trainer, run: CurriculumRun, pack: Packer | None,
                     sequence_len: int | None = None) -> DataLoader:
    """The trainer's train loader, planned by the curriculum; its length is the trainer's own
    batch count (Axolotl's multipack count when packed), so max_steps, epochs and the LR
    schedule stay as the trainer computes them."""
    args = trainer.args
    dataset = full = trainer.train_dataset
    packed = _packed(args)
    if not packed:
        dataset = trainer._remove_unused_columns(dataset, description="training")
    base = trainer._get_train_sampler(dataset)
    if "length" in dataset.column_names:
        dataset = dataset.remove_columns(["length"])
    if (packed and getattr(args, "sample_packing_drop_attention_mask", False)
            and {"position_ids", "attention_mask"} <= set(dataset.column_names)):
        dataset = dataset.remove_columns(["attention_mask"])
    if packed:
        if pack is None:
            raise ValueError("sample packing needs a packer (the Axolotl plugin passes its own)")
        shape = dict(batch_size=base.batch_size, pack=pack, capacity=base.batch_max_len,
                     bin_size=base.bin_size, n_batches=len(base))
    else:
        shape = dict(batch_size=trainer._train_batch_size)
    workers = args.dataloader_num_workers
    loader = run.train_loader(
        dataset, trainer.data_collator, **shape, accelerator=trainer.accelerator,
        seed=args.data_seed if getattr(args, "data_seed", None) is not None else args.seed,
        shuffle=not isinstance(getattr(base, "sampler", base), SequentialSampler),
        tokenizer=getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None),
        sequence_len=sequence_len, epochs=args.num_train_epochs, max_steps=args.max_steps,
        # the trainer skips the replayed start of a resumed epoch, unless told not to: then the
        # loader does not yield it (else those steps would train on the epoch's first batches)
        current_step=lambda: trainer.state.global_step,
        skip_trained=bool(getattr(args, "ignore_data_skip", False)), num_workers=workers,
        model=trainer.model, scores_from=full, eval_dataset=trainer.eval_dataset,
        pad_to_multiple_of=collator_padding(trainer.data_collator),
        prefetch_factor=args.dataloader_prefetch_factor, pin_memory=args.dataloader_pin_memory,
        persistent_workers=args.dataloader_persistent_workers,
        worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index))
    if run.rank == 0:  # what the run will feed per level, for `report` to put beside the log
        write_run_plan(run, args.output_dir, model_config=trainer.model.config)
    return loader


def run_preflight(trainer, run: CurriculumRun, shapes: list[tuple[int, int, int]]) -> None:
    """One forward+backward at each of these micro-batch shapes (rows, positions, longest
    example), the largest the plan can feed; `run.preflight_new_shapes` says which."""
    model = trainer.model_wrapped
    vocab = trainer.model.config.get_text_config().vocab_size
    device = next(trainer.model.parameters()).device
    training = model.training
    model.train()
    for rows, tokens, longest in shapes:
        batch = full_length_batch(rows, tokens, vocab, device, run.plan.packed, longest)
        with trainer.compute_loss_context_manager():
            preflight(model, batch, trainer.accelerator.backward,
                      f"the largest micro-batch the curriculum feeds ({rows} rows x {tokens} tokens)")
        if run.rank == 0:
            logger.info("curriculum: pre-flight at the largest micro-batch (%d rows x %d tokens) fits",
                     rows, tokens)
    model.train(training)


def use_preflight(trainer, run: CurriculumRun) -> None:
    """Pre-flight at the start (and after each re-score, for shapes not yet covered)."""
    wanted = run.curriculum.preflight
    if wanted is None:
        wanted = torch.cuda.is_available()
    if not wanted or run.plan is None:
        return
    if trainer.is_deepspeed_enabled:
        logger.info("curriculum: pre-flight skipped under DeepSpeed (its engine owns backward)")
        return
    run.preflights.at = lambda shapes: run_preflight(trainer, run, shapes)
    run.preflight_new_shapes()
    longest = run.probes.longest() if run.probes is not None else 0
    if longest > max((tokens for _, tokens, _ in run.preflights.done), default=0):
        run_probe_preflight(trainer, run, longest)


def run_probe_preflight(trainer, run: CurriculumRun, tokens: int) -> None:
    """One forward, without gradients, of a `tokens`-long row: the longest probe prompt, when
    it is longer than every training shape (a passkey length beyond the last level's)."""
    model = trainer.model_wrapped
    training = model.training
    model.eval()
    ids = full_length_batch(1, tokens, trainer.model.config.get_text_config().vocab_size,
                            next(trainer.model.parameters()).device, packed=False)["input_ids"]
    try:
        preflight(model, {"input_ids": ids}, None,
                  f"the longest probe prompt (1 row x {tokens} tokens)", PROBE_FIX)
    finally:
        model.train(training)
    if run.rank == 0:
        logger.info("curriculum: pre-flight at the longest probe prompt (%d tokens) fits", tokens)


class CurriculumCallback(TrainerCallback):
    def __init__(self, trainer, run: CurriculumRun, resume_dir: Callable[[Any, Any], Path | None]):
        self.trainer = trainer
        self.run = run
        self.resume_dir = resume_dir
        self.grad_norm = None  # the trainer's, recorded when it computes it for clipping

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:
            path = self.resume_dir(args, state)
            path = path / STATE_FILE if path else None
            saved = json.loads(path.read_text()) if path and path.exists() else None
            self.run.load_state_dict(saved, state.global_step)
        self.run.start()
        use_preflight(self.trainer, self.run)

    def on_step_end(self, args, state, control, **kwargs):
        self.run.on_step_end(state.global_step, self.grad_norm)
        self.grad_norm = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.run.on_evaluate(state.global_step, metrics or {})

    def on_save(self, args, state, control, **kwargs):
        saved = self.run.state_dict(state.global_step)  # every rank: it may reduce
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.run.rank == 0 and checkpoint.is_dir():
            (checkpoint / STATE_FILE).write_text(json.dumps(saved))
            self._save_adapter_rope(checkpoint)

    def on_train_end(self, args, state, control, **kwargs):
        self.run.finish()
        if self.run.rank == 0:
            self._save_adapter_rope(Path(args.output_dir))

    def _save_adapter_rope(self, folder: Path) -> None:
        """An adapter's folder gets the base config with the levels' RoPE (adapter_rope.py)."""
        rope = self.run.rope
        if rope is not None and rope.applied is not None and hasattr(rope.model, "peft_config"):
            folder.mkdir(parents=True, exist_ok=True)
            save_config(rope.model, folder)


def default_resume_dir(args, state) -> Path:
    return Path(args.output_dir) / f"checkpoint-{state.global_step}"


def attach(trainer, curriculum: Curriculum | dict, pack: Packer | None = None,
           resume_dir: Callable[[Any, Any], Path | None] = default_resume_dir,
           truncate_excess: bool = False, sequence_len: int | None = None,
           score_cache: str | Path | None = None,
           eot_tokens: list[str] | None = None) -> CurriculumRun:
    """Give `trainer` the curriculum: its train dataloader, batch measurements and log metrics.

    `curriculum`: the `curriculum:` block, as a `Curriculum` or the plain dict of its YAML.
    `truncate_excess`: in filter mode, rows longer than the last level are head-cut (Axolotl's
    `excess_length_strategy: truncate`) instead of skipped. `sequence_len`: the longest row
    trained on, for `levels: auto` (default: the dataset's longest row). `score_cache`: the
    folder of cached difficulty scores (default: `curriculum_scores` under output_dir).
    `eot_tokens`: the tokens that end a chat turn, where a segment cut ends a chat row
    (Axolotl's key of that name; default: the tokenizer's eos).
    """
    curriculum = Curriculum.model_validate(curriculum)
    args = trainer.args
    if getattr(args, "packing", False):
        raise CurriculumError("curriculum: TRL's packing=True packs rows before the curriculum can "
                              "cut them; set packing=False (padding_free=True keeps rows unpadded)")
    # Axolotl runs the same check at config time; a plain Trainer meets it here.
    curriculum.check_training(max_grad_norm=args.max_grad_norm or 0.0,
                              deepspeed=trainer.is_deepspeed_enabled, packed=_packed(args))
    tokenizer = getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)
    run = CurriculumRun(
        curriculum, args.output_dir, rank=args.process_index, world_size=args.world_size,
        grad_accum=args.gradient_accumulation_steps,
        reduce_mean=lambda t: trainer.accelerator.reduce(t, reduction="mean"),
        truncate_excess=truncate_excess, pad_token_id=getattr(tokenizer, "pad_token_id", None),
        score_cache=Path(score_cache or Path(args.output_dir) / SCORE_FOLDER),
        eot_tokens=eot_tokens)
    callback = CurriculumCallback(trainer, run, resume_dir)
    trainer.get_train_dataloader = lambda: train_dataloader(trainer, run, pack, sequence_len)

    training_step = trainer.training_step

    def measured_training_step(model, inputs, *args, **kwargs):
        loss = training_step(model, inputs, *args, **kwargs)
        run.on_micro_batch(inputs, loss)
        return loss

    trainer.training_step = measured_training_step

    get_grad_norm = trainer._get_grad_norm

    def recorded_grad_norm(*args, **kwargs):
        callback.grad_norm = get_grad_norm(*args, **kwargs)
        return callback.grad_norm

    trainer._get_grad_norm = recorded_grad_norm

    log = trainer.log

    def log_with_curriculum(logs, *args, **kwargs):
        if "loss" in logs:
            logs.update(run.metrics())
        return log(logs, *args, **kwargs)

    trainer.log = log_with_curriculum
    trainer.add_callback(callback)
    return run
