"""What a batch actually fed to the model contains, measured on the device without a host sync."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def padding_mask(inputs: Mapping[str, torch.Tensor], pad_token_id: int | None) -> torch.Tensor:
    """True at padding positions of packed rows.

    Axolotl pads a packed row on the right and continues its position_ids, so the padding looks
    like one more example at the end of the row; it is told apart by holding nothing but pad
    tokens with no label (an example like that has nothing to train and is never fed).
    """
    pos, ids = inputs["position_ids"], inputs["input_ids"]
    labels = inputs.get("labels")
    arange = torch.arange(pos.shape[-1], device=pos.device).expand_as(pos)
    last_start = torch.where(pos == 0, arange, torch.zeros_like(arange)).amax(dim=-1, keepdim=True)
    tail = arange >= last_start
    pad_like = ids == (pad_token_id if pad_token_id is not None else -1)
    if labels is not None:
        pad_like &= labels == -100
    tail_is_pad = ((tail & ~pad_like).sum(dim=-1, keepdim=True) == 0)
    return tail & tail_is_pad


def measure_batch(inputs: Mapping[str, torch.Tensor], pad_token_id: int | None) -> torch.Tensor:
    """Return a device tensor [longest example, non-padding tokens, sum of squared example
    lengths, positions] for one micro-batch. len_sq is attention's share of the compute
    (flops.py): an example of n tokens has positions 0..n-1, and the sum of 2p + 1 over them is
    n^2. positions: what the model runs on, padding included (rows x width)."""
    pos = inputs.get("position_ids")
    mask = inputs.get("attention_mask")
    if pos is not None and pos.dim() == 2:
        pad = padding_mask(inputs, pad_token_id)
        longest = pos.masked_fill(pad, -1).max() + 1
        tokens = (~pad).sum()
        len_sq = (2 * pos + 1).masked_fill(pad, 0).sum()
    elif mask is not None:
        per_row = (mask != 0).sum(dim=-1)
        longest, tokens, len_sq = per_row.max(), per_row.sum(), (per_row * per_row).sum()
    else:
        ids = inputs["input_ids"]
        # torch.full fills on the device; torch.tensor would copy from the host and block
        longest = torch.full((), ids.shape[-1], device=ids.device)
        tokens = torch.full((), ids.numel(), device=ids.device)
        len_sq = tokens * longest
    ids = inputs["input_ids"]
    positions = torch.full((), ids.numel(), device=ids.device)
    return torch.stack([longest.to(torch.int64), tokens.to(torch.int64), len_sq.to(torch.int64),
                        positions.to(torch.int64)])


def norm_scalar(grad_norm, device) -> torch.Tensor:
    """The gradient norm as a plain 0-d float64 tensor on `device`, without a blocking copy.

    Engines hand it over differently: DDP a tensor, DeepSpeed a float, FSDP2 a DTensor (stacking
    that with plain tensors raises; a Partial one would be this rank's share), None without one.
    A host float is filled in on the device (`torch.full`), never copied from the host.
    """
    if grad_norm is None:
        return torch.full((), math.nan, dtype=torch.float64, device=device)
    if hasattr(grad_norm, "full_tensor"):  # DTensor: whole and global, no collective if Replicate
        grad_norm = grad_norm.full_tensor()
    if isinstance(grad_norm, torch.Tensor):
        return grad_norm.detach().to(device=device, dtype=torch.float64).reshape(())
    return torch.full((), float(grad_norm), dtype=torch.float64, device=device)
