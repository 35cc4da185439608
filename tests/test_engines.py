"""Engines with sharded gradients: the gradient norm the gate reads is global and plain.

accelerate refuses FSDP on CPU (it enables FSDP only for accelerator device types) and Axolotl
builds its FSDP device mesh on "cuda", so the Axolotl CLI cannot run FSDP here. torch itself
can: these tests shard the tiny llama over 2 real gloo ranks and pass the norm accelerate would
return through the plugin's conversion (`norm_scalar`).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from axolotl_curriculum.demo import axolotl_env

WORKER = Path(__file__).with_name("fsdp_grad_norm.py")


@pytest.mark.parametrize("version", [1, 2])
def test_fsdp_grad_norm_is_global_on_every_rank(tiny_model, tmp_path, version):
    out = tmp_path / "norm.json"
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(WORKER),
                           str(tiny_model), str(version), str(out)],
                          env=axolotl_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["raw_type"] == ("DTensor" if version == 2 else "Tensor")
    assert r["got_type"] == "Tensor" and r["shape"] == []
    assert r["every_rank"][0] == r["every_rank"][1]
    assert r["every_rank"][0] == pytest.approx(r["expected"], rel=1e-5)
    # the gradients really were sharded: one rank's shards alone give another norm
    assert r["local_shard_norm"] < 0.9 * r["expected"]
    assert r["stacked"][0] == pytest.approx(r["expected"], rel=1e-5)
