"""The probes of a run: held-out measurements, sharded over ranks and reduced.

`passkey` (exact match per length and depth), `position_loss` (held-out long rows' loss by
position bucket) and `short` (held-out rows cut to the first level's length, or its own
`input_len`: retention). They run every `probes.every` steps and at each stay's start and the
run's end, on every rank at the same step (the timeline is the same everywhere), each rank its
share of the prompts and rows;
every rank runs the same number of forwards (padding with zero-weight repeats), so sharded
engines (ZeRO-3, FSDP) gather together. The sums go to one device tensor and one collective; the
host reads it once per probe. Prompts and rows are drawn from `probes.seed` with numpy, and the
forwards run in eval mode without gradients: probing changes neither the data order nor torch's
random stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..core import passkey
from ..core.config import Curriculum
from ..core.errors import CurriculumError
from ..core.schedule import Timeline
from ..core.names import SHORT, passkey_key, position_key

logger = logging.getLogger(__name__)
IGNORE = -100


@dataclass(frozen=True)
class Item:
    """One probe forward: its tokens, its scored labels, and where its sums go."""

    kind: str                 # short | position_loss | passkey
    ids: list[int]
    labels: list[int]         # IGNORE where not scored
    slot: int                 # passkey: its (length, depth) cell; else unused
    length: int = 0           # passkey: the prompt's length


def buckets(first: int, longest: int) -> list[tuple[int, int]]:
    """[0, first), [first, 2 first), [2 first, 4 first), ... covering `longest` positions."""
    edges = [0, first]
    while edges[-1] < longest:
        edges.append(edges[-1] * 2)
    return list(zip(edges[:-1], edges[1:]))


class Probes:
    """The run's probe rows and prompts, and the measurement at a step."""

    def __init__(self, curriculum: Curriculum, timeline: Timeline, model, rank: int,
                 world_size: int, reduce_mean):
        self.cur, self.settings, self.timeline, self.model = (curriculum, curriculum.probes,
                                                              timeline, model)
        self.rank, self.world_size, self.reduce_mean = rank, world_size, reduce_mean
        self.short_rows: list[tuple[list[int], list[int]]] = []
        self.long_rows: list[tuple[list[int], list[int]]] = []
        self.prompts: list[passkey.PasskeyPrompt] = []
        self.cells: list[tuple[int, float, bool]] = []  # passkey (length, depth, chat)
        self.buckets: list[tuple[int, int]] = []
        self.seconds = 0.0

    @classmethod
    def of(cls, curriculum: Curriculum, timeline: Timeline, model, eval_rows, tokenizer, *,
           rank: int, world_size: int, reduce_mean) -> "Probes | None":
        """The run's probes, built (None where the block sets none)."""
        if curriculum.probes is None:
            return None
        if model is None:
            raise CurriculumError("curriculum.probes: the probes run the model; pass model= to "
                                  "train_loader")
        probes = cls(curriculum, timeline, model, rank, world_size, reduce_mean)
        probes.build(eval_rows, tokenizer)
        return probes

    # -- building (once, before step 1) ---------------------------------------------------------
    def build(self, eval_rows, tokenizer) -> None:
        """Take the held-out rows (`input_ids`, optional `labels`) and build the prompts."""
        s = self.settings
        rng = np.random.default_rng(s.seed)
        if s.short is not None or s.position_loss is not None:
            rows = _held_out(eval_rows, "short" if s.short is not None else "position_loss")
            if s.short is not None:
                first = s.short.input_len or self.cur.input_lens[0]
                cut = [(ids[:first], labels[:first]) for ids, labels in rows]
                cut = [row for row in cut if any(t != IGNORE for t in row[1][1:])]
                if not cut:
                    raise CurriculumError("curriculum.probes.short: no held-out row has a trained "
                                          f"token within its first {first} tokens")
                order = rng.permutation(len(cut))[:s.short.rows]
                self.short_rows = [cut[i] for i in sorted(order)]
            if s.position_loss is not None:
                longest = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
                self.long_rows = [rows[i] for i in sorted(longest[:s.position_loss.rows])]
                self.buckets = buckets(s.position_loss.first_bucket, max(self.cur.input_lens))
        if s.passkey is not None:
            self._build_passkey(tokenizer)

    def _build_passkey(self, tokenizer) -> None:
        where = "curriculum.probes.passkey"
        if tokenizer is None:
            raise CurriculumError(f"{where}: the prompts need the tokenizer; pass tokenizer= to "
                                  "train_loader")

        def encode(text: str) -> list[int]:
            return list(tokenizer(text, add_special_tokens=False)["input_ids"])

        with_special = tokenizer("a")["input_ids"]
        bos = ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and with_special
               and with_special[0] == tokenizer.bos_token_id else [])
        p, lengths = self.settings.passkey, self.cur.passkey_lengths()
        chat = None
        if p.chat:
            if not getattr(tokenizer, "chat_template", None):
                raise CurriculumError(f"{where}.chat: the tokenizer has no chat template; set "
                                      "Axolotl's chat_template, or chat: false")
            chat = passkey.turn(lambda content: tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False,
                add_generation_prompt=True), encode)
        least = passkey.shortest(encode, p.digits, chat or ((), ())) + len(bos)
        if p.lengths is None:  # the levels' lengths: those a prompt fits in
            lengths = [n for n in lengths if n >= least] or lengths[-1:]
        if lengths[0] < least:
            raise CurriculumError(f"{where}.lengths: {lengths[0]} tokens cannot hold a passkey "
                                  f"prompt (this tokenizer needs at least {least}); use lengths "
                                  f">= {least}")
        self.prompts = passkey.grid(encode, lengths, list(p.depths), p.rows, p.digits,
                                    self.settings.seed, bos, chat)
        asked = (False, True) if p.chat else (False,)  # plain, and as a chat turn
        self.cells = [(n, d, c) for n in lengths for d in p.depths for c in asked]

    # -- when -----------------------------------------------------------------------------------
    def due(self, global_step: int, total_steps: int | None) -> bool:
        """Every `every` steps, at the end, and before each stay in a level (its `before`
        value, the previous level's end) except on a ramp, whose length changes every few
        steps."""
        if global_step % self.settings.every == 0 or global_step == total_steps:
            return True
        return self.cur.ramp is None and self.timeline.position(global_step)[1] == global_step

    # -- measuring ------------------------------------------------------------------------------
    def items(self, level: int) -> list[Item]:
        """What a probe at `level` runs: passkey up to the next level's length (extrapolation);
        at the last level every length asked for (a length beyond the last level's: how far
        the extended context carries)."""
        last = self.timeline.last_level
        upto = (self.timeline.input_lens[level + 1] if level < last
                else max([self.timeline.input_lens[last]] + [pr.length for pr in self.prompts]))
        input_len = self.timeline.input_lens[level]
        out = [Item("short", ids, labels, 0) for ids, labels in self.short_rows]
        out += [Item("position_loss", ids[:input_len], labels[:input_len], 0)
                for ids, labels in self.long_rows]
        for i, pr in enumerate(self.prompts):
            if pr.length <= upto:
                labels = [IGNORE] * pr.answer_start + pr.ids[pr.answer_start:]
                out.append(Item("passkey", pr.ids, labels,
                                self.cells.index((pr.length, pr.depth, pr.chat)), pr.length))
        return out

    def longest(self) -> int:
        """The longest row a probe forwards: at the last level, where every passkey length
        asked for runs (the pre-flight's probe shape)."""
        return max((len(item.ids) for item in self.items(self.timeline.last_level)), default=0)

    def measure(self, level: int) -> dict[str, float]:
        """Every probe at `level`, reduced over ranks: the same values on every rank."""
        import time

        model = self.model
        began = time.perf_counter()
        items = self.items(level)
        per_rank = -(-len(items) // self.world_size)
        mine = [(items[i], 1.0) if i < len(items) else (items[0], 0.0)
                for i in range(self.rank, per_rank * self.world_size, self.world_size)]
        device = next(model.parameters()).device
        # [short sum, short count, (bucket sum, count)..., (passkey correct, count)...]
        sums = torch.zeros(2 + 2 * len(self.buckets) + 2 * len(self.cells), dtype=torch.float64,
                           device=device)
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for item, weight in mine:
                    self._add(model, item, weight, sums, device)
        finally:
            model.train(training)
        sums = self.reduce_mean(sums) * self.world_size
        values = self._values(sums.cpu().tolist(), level)
        self.seconds += time.perf_counter() - began
        return values

    def _add(self, model, item: Item, weight: float, sums: torch.Tensor, device) -> None:
        ids = torch.tensor([item.ids], device=device)
        labels = torch.tensor(item.labels[1:], device=device)
        if item.kind == "passkey":  # logits only where the key is predicted
            keep = len(item.ids) - next(i for i, t in enumerate(item.labels) if t != IGNORE)
            logits = model(input_ids=ids, logits_to_keep=keep + 1).logits[0, :-1]
            right = (logits.argmax(-1) == labels[-keep:]).all()
            slot = 2 + 2 * len(self.buckets) + 2 * item.slot
            sums[slot] += weight * right.double()
            sums[slot + 1] += weight
            return
        logits = model(input_ids=ids).logits[0, :-1].float()
        scored = labels != IGNORE
        losses = torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        losses = torch.where(scored, losses, torch.zeros_like(losses)).double()
        if item.kind == "short":
            sums[0] += weight * losses.sum()
            sums[1] += weight * scored.sum()
            return
        positions = torch.arange(1, len(item.ids), device=device)  # the predicted token's position
        for b, (low, high) in enumerate(self.buckets):
            inside = scored & (positions >= low) & (positions < high)
            sums[2 + 2 * b] += weight * (losses * inside).sum()
            sums[3 + 2 * b] += weight * inside.sum()

    def _values(self, sums: list[float], level: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.short_rows and sums[1] > 0:
            out[SHORT] = sums[0] / sums[1]
        for b, (low, high) in enumerate(self.buckets):
            if sums[3 + 2 * b] > 0:
                out[position_key(low, high)] = sums[2 + 2 * b] / sums[3 + 2 * b]
        base = 2 + 2 * len(self.buckets)
        by_length: dict[str, list[float]] = {}
        for c, (length, depth, chat) in enumerate(self.cells):
            correct, count = sums[base + 2 * c], sums[base + 2 * c + 1]
            if count > 0:
                key = passkey_key(length, chat)
                out[f"{key}/depth{depth:g}"] = correct / count
                by_length.setdefault(key, []).append(correct / count)
        for key, accuracies in by_length.items():
            out[key] = float(np.mean(accuracies))
        return out


def _held_out(eval_rows, needed: str) -> list[tuple[list[int], list[int]]]:
    """The held-out rows as (input_ids, labels); labels default to every token."""
    if eval_rows is None or len(eval_rows) == 0:
        raise CurriculumError(
            f"curriculum.probes.{needed}: needs held-out rows: set val_set_size (or "
            "test_datasets) in the Axolotl config; a custom loop passes eval_dataset= to "
            "train_loader")
    if hasattr(eval_rows, "column_names"):  # a datasets.Dataset: whole columns at once
        column = lambda name: eval_rows[name] if name in eval_rows.column_names else None
    else:  # a list of row dicts
        column = lambda name: [r[name] for r in eval_rows] if name in eval_rows[0] else None
    ids = column("input_ids")
    labels = column("labels") or ids
    return [(list(map(int, i)), list(map(int, lab))) for i, lab in zip(ids, labels) if len(i) >= 2]
