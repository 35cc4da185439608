"""A curriculum in a hand-written training loop: plain PyTorch, or accelerate. No Trainer.

    python examples/custom_loop.py WORKDIR                     # plain PyTorch, one process
    accelerate launch --multi_gpu --num_processes 2 examples/custom_loop.py WORKDIR --accelerate

(On a machine without a GPU the second runs 2 gloo processes on the CPU: the script asks for
`Accelerator(cpu=True)`. accelerate's own `--cpu` flag starts a single process unless MPI is
set up, so it is not used here.)

Builds the demo's tiny llama and corpus offline, then trains 30 optimizer steps with a 3-level
curriculum and sense_grad. The curriculum's lines are marked `# curriculum`. Writes
WORKDIR/out/curriculum_log.jsonl. `--stop-at N` saves a checkpoint at step N and stops;
`--resume` continues from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq

from axolotl_curriculum.testing import build_tiny_model, write_corpus
from axolotl_curriculum import CurriculumRun

CURRICULUM = {
    "levels": [{"input_len": 32, "max_steps": 10}, {"input_len": 64, "max_steps": 10},
               {"input_len": 128}],
    "sense_grad": {"check_every": 2, "window": 4, "settle_steps": 1, "min_steps": 4},
}
MAX_STEPS, GRAD_ACCUM, BATCH_SIZE = 30, 2, 4


def prepare(work: Path, tokenizer_dir: Path):
    """The corpus tokenized for causal LM training: input_ids and labels (all scored)."""
    data = write_corpus(work / "corpus.jsonl", tokenizer_dir, n=400, min_tokens=70,
                        max_tokens=128, seed=1)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)

    def tokenize(row):
        ids = tokenizer(row["text"])["input_ids"] + [tokenizer.eos_token_id]
        return {"input_ids": ids, "labels": list(ids)}

    dataset = load_dataset("json", data_files=str(data), split="train")
    return tokenizer, dataset.map(tokenize, remove_columns=["text"])


def main(work: Path, use_accelerate: bool = False, stop_at: int | None = None,
         resume: bool = False, on_model=None) -> None:
    accelerator = None
    if use_accelerate:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=True)
    first = accelerator.main_process_first() if accelerator else _Nothing()
    with first:  # rank 0 builds the model and data, the others then read them
        model_dir = build_tiny_model(work / "model")
        tokenizer, dataset = prepare(work, model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if on_model:
        on_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    run = CurriculumRun(  # curriculum
        CURRICULUM, work / "out", grad_accum=GRAD_ACCUM, pad_token_id=tokenizer.pad_token_id,
        rank=accelerator.process_index if accelerator else 0,
        world_size=accelerator.num_processes if accelerator else 1,
        reduce_mean=(lambda t: accelerator.reduce(t, reduction="mean")) if accelerator else None)
    loader = run.train_loader(  # curriculum
        dataset, DataCollatorForSeq2Seq(tokenizer, padding=True), BATCH_SIZE, seed=0,
        max_steps=MAX_STEPS, accelerator=accelerator)
    if accelerator:
        model, optimizer = accelerator.prepare(model, optimizer)

    checkpoint = work / "checkpoint"
    if resume:
        saved = torch.load(checkpoint / "loop.pt", weights_only=False)
        _unwrap(model, accelerator).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        run.load_state_dict(json.loads((checkpoint / "curriculum.json").read_text()),  # curriculum
                            saved["step"])
    run.start()  # curriculum
    model.train()
    step = run.global_step
    while step < MAX_STEPS:
        for i, batch in enumerate(loader):
            loss = model(**batch).loss / GRAD_ACCUM
            accelerator.backward(loss) if accelerator else loss.backward()
            run.on_micro_batch(batch, loss)  # curriculum
            if (i + 1) % GRAD_ACCUM:
                continue
            clip = accelerator.clip_grad_norm_ if accelerator else torch.nn.utils.clip_grad_norm_
            grad_norm = clip(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            run.on_step_end(step, grad_norm)  # curriculum: device tensors, no host read
            if step == stop_at:
                state = run.state_dict(step)  # curriculum: every rank (it may reduce)
                if run.rank == 0:
                    checkpoint.mkdir(exist_ok=True)
                    torch.save({"model": _unwrap(model, accelerator).state_dict(),
                                "optimizer": optimizer.state_dict(), "step": step},
                               checkpoint / "loop.pt")
                    (checkpoint / "curriculum.json").write_text(json.dumps(state))
                run.log.flush()
                return
            if step == MAX_STEPS:
                break
    run.finish()  # curriculum: the log's last lines and curriculum_summary.json


def _unwrap(model, accelerator):
    return accelerator.unwrap_model(model) if accelerator else model


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--accelerate", action="store_true", help="an accelerate loop")
    parser.add_argument("--stop-at", type=int, help="save a checkpoint at this step and stop")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    args = parser.parse_args()
    main(args.workdir.resolve(), args.accelerate, args.stop_at, args.resume)
