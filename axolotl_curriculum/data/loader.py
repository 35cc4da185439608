"""The curriculum's train loader: a batch sampler that plans each step, and the cut dataset.

The schedule lives in the batch sampler: every index of a micro-batch carries how its row is
cut, so the cut happens wherever the collator runs (worker processes included) and every rank
builds the same global plan; accelerate's `BatchSamplerShard` then hands each rank its share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import BatchSampler, DataLoader, Dataset

from ..core.cut import Cuts, apply_cut
from ..core.plan import BatchPlan, Spec


class CutDataset(Dataset):
    """Rows of the tokenized dataset, cut as the index says.

    An index is a `Spec` (row, head, start, end): feed `row[:head] + row[start:end]`. The plan
    decides every cut; nothing else is stored, so no level keeps a copy of the data.
    """

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, spec: Spec) -> dict:
        return apply_cut(self.rows[spec[0]], *spec[1:])

    def __getitems__(self, specs: list[Spec] | list[list[Spec]]) -> list:
        """A micro-batch: a list of specs, or (packed) a list of bins of specs, which the
        packing collator takes as a list of lists of rows. torch's fetcher hands the whole
        micro-batch here; Axolotl's patched fetcher asks `__getitem__` per spec instead."""
        if specs and isinstance(specs[0], list):  # packed: bins
            flat = self.__getitems__([spec for b in specs for spec in b])
            edges = np.cumsum([0] + [len(b) for b in specs])
            return [flat[edges[i]:edges[i + 1]] for i in range(len(specs))]
        if hasattr(self.rows, "__getitems__"):
            rows = self.rows.__getitems__([spec[0] for spec in specs])
        else:
            rows = [self.rows[spec[0]] for spec in specs]
        return [apply_cut(row, *spec[1:]) for row, spec in zip(rows, specs)]


class LevelBatchSampler(BatchSampler):
    """Yields a fixed number of global micro-batches per epoch, planned step by step.

    Micro-batches vary in size (a short level's unpacked token budget takes more examples), so
    `batch_size` is None: accelerate's shard then yields every group of micro-batches instead
    of dropping those of another size. What each planned step holds (examples, tokens cut, ...)
    is kept in `planned` by 0-based global step until the run log takes it.

    After a resume, `current_step()` is past the epoch's start: the epoch is planned from its
    start again (the same stream) and its trained steps are replayed for the trainer to skip
    (transformers does), or not yielded at all with `skip_trained` (a hand-written loop).
    """

    def __init__(self, plan: BatchPlan, cuts_at: Callable[[int], Cuts], n_batches: int,
                 batches_per_step: int, current_step: Callable[[], int], delay: int | None = None,
                 skip_trained: bool = False):
        self.plan = plan
        self.cuts_at = cuts_at
        self.n_batches = n_batches
        self.batches_per_step = batches_per_step
        self.steps_per_epoch = n_batches // batches_per_step
        self.current_step = current_step
        self.delay = delay
        self.skip_trained = skip_trained
        self.planned: dict[int, dict] = {}
        self.batch_size = None
        self.drop_last = True
        self.sampler = None

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list]:
        # Asked when an epoch's iteration starts (also after a resume, which replays the epoch).
        epoch = self.current_step() // self.steps_per_epoch
        first = epoch * self.steps_per_epoch
        steps = self.plan.epoch(epoch, self.n_batches, self.batches_per_step,
                                lambda k: self.cuts_at(self._checked(first + k)))
        resumed_at = self.current_step()
        for k, (stats, batches) in enumerate(steps):
            if first + k >= resumed_at:  # not a step a resume replays to skip it
                self.planned[first + k] = stats
            elif self.skip_trained:
                continue
            yield from batches

    def _checked(self, step: int) -> int:
        # Decisions reach the data `delay` steps later; planning further ahead could disagree
        # with a decision still to come, and then ranks or the log would disagree with the data.
        if self.delay is not None and step >= self.current_step() + self.delay:
            raise RuntimeError(
                f"curriculum: the data loader planned step {step + 1} while training is at step "
                f"{self.current_step()}, beyond the switch delay of {self.delay} steps; lower "
                "dataloader_num_workers or gradient_accumulation_steps"
            )
        return step


def make_loader(dataset, sampler: LevelBatchSampler, collate_fn, *, num_workers: int = 0,
                prefetch_factor: int | None = None, pin_memory: bool = False,
                persistent_workers: bool = False, worker_init_fn=None) -> DataLoader:
    return DataLoader(CutDataset(dataset), batch_sampler=sampler, collate_fn=collate_fn,
                      num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=persistent_workers if num_workers else False,
                      prefetch_factor=prefetch_factor if num_workers else None,
                      worker_init_fn=worker_init_fn)


def shard(loader: DataLoader, accelerator) -> DataLoader:
    """accelerate's own sharding of the loader, with uneven micro-batch sizes allowed for it
    alone (the accelerator's setting, which eval loaders also read, is put back)."""
    even = accelerator.even_batches
    accelerator.even_batches = False
    try:
        return accelerator.prepare(loader)
    finally:
        accelerator.even_batches = even
