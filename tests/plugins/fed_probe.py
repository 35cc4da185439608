"""A test-only Axolotl plugin: records, from outside the curriculum, what each rank trained on.

- `fed.rank{R}.jsonl`: the dataset rows of each micro-batch a rank fetches, in order (a line per
  fetch: the row ids, a packed micro-batch's bins flattened), so a test can count how often each
  example was fed and trace every example the model saw back to its row.
- `fetched.rank{R}.jsonl`: per fetched example, `[row, digest of the token ids fetched]`, the
  key that ties an example of the forward to its row (workers may fetch out of order).
- `forward.rank{R}.jsonl`: per training micro-step, what the model's forward received
  (`input_ids`, `labels`, `attention_mask`, `position_ids` as given) and the 1-based optimizer
  step it belongs to. Read by a forward pre-hook on the model, only inside the trainer's
  `training_step` (not the pre-flight, eval or a difficulty pass).
- `train_rows.jsonl` (rank 0): the trainer's train dataset, row by row (`input_ids`, `labels`),
  the reference the fed examples are checked against.

Works with or without the curriculum plugin listed (without it, only the forward is recorded).
"""

import hashlib
import json
from pathlib import Path

from axolotl.integrations.base import BasePlugin

FORWARD_KEYS = ("input_ids", "labels", "attention_mask", "position_ids")


def digest(ids) -> str:
    return hashlib.sha1(json.dumps([int(t) for t in ids]).encode()).hexdigest()[:16]


def _examples(fetched) -> list[dict]:
    return [e for item in fetched for e in (item if isinstance(item, list) else [item])]


def _row_ids(specs) -> list[int]:
    out = []
    for spec in specs:
        if isinstance(spec, list):  # a packed bin
            out += [int(s[0]) for s in spec]
        else:
            out.append(int(spec[0]))
    return out


def _record_fetches(fetched: Path, keyed: Path) -> None:
    """Wrap `CutDataset`'s fetches: each writes its rows to `fetched`, its examples' keys to
    `keyed`."""
    from axolotl_curriculum.data import loader

    get, get_one = loader.CutDataset.__getitems__, loader.CutDataset.__getitem__
    inside = [0]  # a packed micro-batch fetches its bins through a nested call: count once

    def fetch_recorded(rows: list[int], fetch, examples):
        """`fetch()`, writing the rows asked for and each fetched example's key (not for the
        nested fetches of a packed micro-batch)."""
        if not inside[0]:
            with fetched.open("a") as f:
                f.write(json.dumps(rows) + "\n")
        inside[0] += 1
        try:
            got = fetch()
        finally:
            inside[0] -= 1
        if not inside[0]:
            pairs = [[row, digest(e["input_ids"])] for row, e in zip(rows, examples(got))]
            with keyed.open("a") as f:
                f.write("".join(json.dumps(pair) + "\n" for pair in pairs))
        return got

    def recorded(self, specs):
        return fetch_recorded(_row_ids(specs), lambda: get(self, specs), _examples)

    def recorded_one(self, spec):  # Axolotl's patched fetcher asks one spec at a time
        return fetch_recorded([int(spec[0])], lambda: get_one(self, spec), lambda e: [e])

    loader.CutDataset.__getitems__ = recorded
    loader.CutDataset.__getitem__ = recorded_one


def _record_forwards(trainer, forwards: Path) -> None:
    """A forward pre-hook on the model writing what each training micro-step's forward got."""
    current = {"step": None}
    training_step = trainer.training_step

    def in_training_step(model, inputs, *args, **kwargs):
        current["step"] = trainer.state.global_step + 1
        try:
            return training_step(model, inputs, *args, **kwargs)
        finally:
            current["step"] = None

    trainer.training_step = in_training_step

    def record(module, args, kwargs):
        if current["step"] is None:
            return
        rec = {"step": current["step"]}
        for key in FORWARD_KEYS:
            value = kwargs.get(key)
            if value is not None:
                rec[key] = value.tolist()
        with forwards.open("a") as f:
            f.write(json.dumps(rec) + "\n")

    trainer.model.register_forward_pre_hook(record, with_kwargs=True)


class FedProbe(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        rank = trainer.args.process_index
        fetched = out / f"fed.rank{rank}.jsonl"
        forwards = out / f"forward.rank{rank}.jsonl"
        keyed = out / f"fetched.rank{rank}.jsonl"
        for path in (fetched, forwards, keyed):  # a second run in the same folder records anew
            path.unlink(missing_ok=True)
        _record_fetches(fetched, keyed)
        _record_forwards(trainer, forwards)

        if rank == 0 and trainer.train_dataset is not None:
            ds = trainer.train_dataset
            with (out / "train_rows.jsonl").open("w") as f:
                for ids, labels in zip(ds["input_ids"], ds["labels"]):
                    f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
