"""Pre-flight: one forward and backward at the last level's full shape, before training.

Short early levels hide an out-of-memory error until the last level (or, unpacked with a token
budget, until a short level's wide micro-batch), hours in, and fragment the
allocator on the way (Composer pre-runs full length for the same reason). Running the largest
micro-batch first makes a job that cannot fit fail in its first minute, and reserves the memory.
The probes (run/probes.py) forward one held-out row at a time, without gradients, and a passkey
length beyond the last level's is measured only after the last step: its forward is pre-flighted
too, so a prompt that cannot fit fails at the start rather than at the end of the run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

OOM_MARKS = ("out of memory", "can't allocate memory", "cannot allocate memory")


class PreflightError(RuntimeError):
    pass


def full_length_batch(rows: int, tokens: int, vocab_size: int, device, packed: bool,
                      longest: int | None = None) -> dict:
    """A micro-batch of the largest shape: `rows` rows of `tokens` tokens, all trained; packed
    rows hold examples of `longest` tokens (position_ids restart for each, as Axolotl packs)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, max(vocab_size, 4), (rows, tokens), generator=generator).to(device)
    batch = {"input_ids": ids, "labels": ids.clone()}
    if packed:
        pos = torch.arange(tokens, device=device) % (longest or tokens)
        batch["position_ids"] = pos.expand(rows, tokens).clone()
    else:
        batch["attention_mask"] = torch.ones_like(ids)
    return batch


TRAINING_FIX = "lower micro_batch_size or sequence_len, or enable gradient_checkpointing"
PROBE_FIX = "lower the longest of curriculum.probes.passkey.lengths"


def preflight(model: torch.nn.Module, batch: dict,
              backward: Callable[[torch.Tensor], None] | None, describe: str,
              fix: str = TRAINING_FIX) -> None:
    """Run forward + backward on `batch` (forward only, without gradients, if `backward` is
    None: a probe's), then drop the gradients; a failure to fit is raised as a PreflightError
    saying what did not fit and what to change."""
    try:
        if backward is None:
            with torch.no_grad():
                model(**batch)
        else:
            backward(model(**batch).loss)
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as err:
        if not isinstance(err, (torch.OutOfMemoryError, MemoryError)) and not any(
                mark in str(err).lower() for mark in OOM_MARKS):
            raise
        raise PreflightError(
            f"curriculum pre-flight: {describe} does not fit in memory; {fix} "
            f"(set curriculum.preflight: false to skip this check). Cause: {err}") from err
    finally:
        model.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class Preflights:
    """The micro-batch shapes (rows, positions per row, longest example) pre-flighted so far;
    `at(shapes)`, set by an adapter, runs a forward+backward at each new one."""

    def __init__(self):
        self.done: list[tuple[int, int, int]] = []
        self.at: Callable[[list], None] | None = None

    def run(self, shapes: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """Pre-flight the shapes no earlier one covers (a re-score can widen an unpacked
        micro-batch under a token budget); returns them."""
        new = [s for s in shapes
               if not any(o[0] >= s[0] and o[1] >= s[1] and o[2] >= s[2] for o in self.done)]
        if new and self.at is not None:
            self.at(new)
            self.done += new
        return new
