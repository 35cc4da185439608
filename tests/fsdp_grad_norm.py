"""Run by torchrun from test_engines.py: the gate's gradient norm under FSDP on 2 gloo ranks.

Gradients are sharded across ranks; the norm the trainer hands to the curriculum (what
accelerate's `clip_grad_norm_` returns for this FSDP version) must come out as one plain
tensor, equal on every rank, equal to the unsharded model's norm on both ranks' data.
"""

import copy
import json
import sys
from functools import partial

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from axolotl_curriculum.run.batch_stats import norm_scalar


def batch(rank: int, vocab: int) -> dict:
    ids = torch.randint(5, vocab, (2, 48), generator=torch.Generator().manual_seed(rank))
    return {"input_ids": ids, "labels": ids}


def sharded(model, version: int):
    if version == 2:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    policy = partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
    return FullyShardedDataParallel(model, auto_wrap_policy=policy, use_orig_params=True,
                                     device_id=torch.device("cpu"))


def main(model_dir: str, version: int, out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    reference = copy.deepcopy(model)
    vocab = model.config.vocab_size
    model = sharded(model, version)

    model(**batch(rank, vocab)).loss.backward()
    if version == 2:  # accelerate.Accelerator.clip_grad_norm_ under FSDP2
        raw = torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1e9)
    else:  # ... and under FSDP1
        raw = model.clip_grad_norm_(1e9)
    got = norm_scalar(raw, "cpu")

    # the same global batch (both ranks' data, gradients averaged) on one unsharded copy
    loss = sum(reference(**batch(r, vocab)).loss for r in range(world)) / world
    loss.backward()
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1e9)

    every = [None] * world
    dist.all_gather_object(every, float(got))
    shard_sq = sum(float(p.grad.to_local().pow(2).sum()) if hasattr(p.grad, "to_local")
                   else float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"raw_type": type(raw).__name__, "got_type": type(got).__name__,
                       "shape": list(got.shape), "every_rank": every, "expected": float(expected),
                       "local_shard_norm": shard_sq ** 0.5,
                       "stacked": torch.stack([got, loss.detach()]).tolist()}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
