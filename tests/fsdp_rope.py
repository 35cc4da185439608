"""Run by torchrun from test_engines.py: per-level RoPE under FSDP2 on 2 gloo ranks.

    torchrun --standalone --nproc_per_node 2 tests/fsdp_rope.py MODEL_DIR LEVELS_JSON STEPS OUT

A hand-written loop over the tiny llama sharded with torch's `fully_shard`, driven by
`CurriculumRun` (each rank its share of the curriculum's micro-batches, as accelerate's shard
deals them). Before every step, each rank records its rotary `inv_freq`, its config's
`rope_parameters` and the logits witness: the full weights gathered from the shards, loaded into
a LlamaForCausalLM built anew from a config carrying the RoPE that step should run with
(worked out here from the levels and the model's own config, not read from the curriculum),
give the FSDP model's logits on a fixed input; at a level's first step, the previous level's
RoPE must not. Each rank writes OUT/rope.rank{R}.json.
"""

import copy
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from datasets import Dataset
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import axolotl_curriculum
from axolotl_curriculum import CurriculumRun
from fsdp_grad_norm import sharded

PROBE_LEN = 96


def data(vocab: int, n: int = 48) -> Dataset:
    """Token rows of 20-64 ids, the same on every rank."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(5, vocab, (int(torch.randint(20, 65, (1,), generator=g)),),
                            generator=g).tolist()
        rows.append({"input_ids": ids, "labels": list(ids)})
    return Dataset.from_list(rows)


def collate(rows: list[dict], pad_id: int) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = (torch.tensor(r["input_ids"]),
                                                  torch.tensor(r["labels"]), 1)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def expected_ropes(levels: list[dict], base: dict, steps: int) -> list[dict]:
    """Per 1-based step, the RoPE its level sets (the model's own where it sets none)."""
    out = []
    for level in levels:
        rope = dict(base, **({"rope_theta": float(level["rope_theta"])}
                             if "rope_theta" in level else {}))
        out += [rope] * level.get("max_steps", steps)
    return out[:steps]


def fresh_logits(config, rope: dict, weights: dict, probe: torch.Tensor):
    """A model built anew from a config carrying `rope`, with `weights`: its logits and its
    rotary frequencies."""
    config = copy.deepcopy(config)
    config.rope_parameters = dict(rope)
    fresh = LlamaForCausalLM(config)
    fresh.load_state_dict(weights)
    with torch.no_grad():
        return fresh.eval()(probe).logits, fresh.model.rotary_emb.inv_freq.clone()


def main(model_dir: str, levels: list[dict], steps: int, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = copy.deepcopy(model.config)  # the model's own, before any level changes it
    ropes = expected_ropes(levels, dict(config.rope_parameters), steps)
    vocab, pad_id = config.vocab_size, config.pad_token_id
    probe = torch.arange(PROBE_LEN).mul(37).remainder(vocab - 5).add(5).unsqueeze(0)
    model = sharded(model, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def reduce_mean(t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t / world

    run = CurriculumRun({"levels": levels}, Path(out) / "run", rank=rank, world_size=world,
                        reduce_mean=reduce_mean, pad_token_id=pad_id)
    loader = run.train_loader(data(vocab), lambda rows: collate(rows, pad_id), batch_size=2,
                              max_steps=steps, model=model)
    rotary = model.model.rotary_emb
    records = []
    run.start()
    model.train()
    # the global micro-batches dealt round robin, as accelerate's shard does (one per rank/step)
    for step, batch in zip(range(1, steps + 1), itertools.islice(loader, rank, None, world)):
        weights = get_model_state_dict(  # a collective: every rank
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        weights = {k: v.detach().clone() for k, v in weights.items()}
        with torch.no_grad():  # FSDP's forward is a collective too
            model.eval()
            own = model(probe).logits
            model.train()
        level_first = step > 1 and ropes[step - 1] != ropes[step - 2]
        fresh, fresh_inv = fresh_logits(config, ropes[step - 1], weights, probe)
        rec = {"step": step, "rope_parameters": dict(model.config.rope_parameters),
               "expected": ropes[step - 1], "inv_freq": rotary.inv_freq.tolist(),
               "fresh_inv_freq": fresh_inv.tolist(),
               "logits_diff": (own - fresh).abs().max().item(),
               "logits_scale": own.abs().max().item(),
               "probe_sum": own.double().sum().item(),
               "rows": batch["input_ids"].shape[0], "width": batch["input_ids"].shape[1]}
        if level_first:
            other, _ = fresh_logits(config, ropes[step - 2], weights, probe)
            rec["previous_diff"] = (own - other).abs().max().item()
        loss = model(**batch).loss
        loss.backward()
        run.on_micro_batch(batch, loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        rec["loss"] = loss.item()
        records.append(rec)
        run.on_step_end(step, grad_norm)
    run.finish()
    with open(Path(out) / f"rope.rank{rank}.json", "w") as f:
        json.dump({"package": axolotl_curriculum.__file__, "world_size": world,
                   "sharded": type(model).__name__, "steps": records}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
