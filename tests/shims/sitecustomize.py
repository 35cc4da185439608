"""Test harness only: lets DeepSpeed ZeRO train on a machine without a GPU (2 gloo ranks).

DeepSpeed itself runs on CPU (its CPU accelerator uses gloo), but three CUDA assumptions in the
layers above it stop a CPU run before the first step. Imported by Python at start-up when this
folder is on PYTHONPATH; active only with DS_CPU_SHIM=1, no CUDA and in a training rank
(`-m axolotl.cli.train`): its imports cost ~10 s a process, and the `axolotl` CLI, torchrun and
the helpers `datasets` spawns to save a dataset need none of it. Nothing here changes what
DeepSpeed computes: the engine, ZeRO partitioning, the reductions and the global norm are real.
"""

import os
import sys

if os.environ.get("DS_CPU_SHIM") == "1" and "axolotl.cli.train" in sys.orig_argv:
    import torch

    if not torch.cuda.is_available():
        import functools
        import importlib

        import deepspeed.comm
        from accelerate import state
        from accelerate.utils import DistributedType

        # 1. Axolotl's setup_deepspeed_env initialises one-process DeepSpeed with "nccl".
        _init = deepspeed.comm.init_distributed

        def init_distributed(dist_backend=None, *args, **kwargs):
            return _init("gloo" if dist_backend == "nccl" else dist_backend, *args, **kwargs)

        deepspeed.comm.init_distributed = init_distributed

        # 2. accelerate picks no process group without a GPU (cpu=True would drop DeepSpeed),
        #    so it would count 1 process while DeepSpeed counts 2.
        _prepare = state.PartialState._prepare_backend

        def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
            found = _prepare(self, cpu, sagemaker_dp, backend)
            if (found[0] is None and not cpu and int(os.environ.get("LOCAL_RANK", -1)) != -1
                    and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"):
                return "gloo", DistributedType.MULTI_CPU
            return found

        state.PartialState._prepare_backend = _prepare_backend

        # 3. gloo's all-gather copies into views of an output that requires grad (ZeRO's flat
        #    groups), which autograd refuses with grad mode on (DeepSpeed issue #2818).
        backend = importlib.import_module("deepspeed.comm.torch").TorchBackend
        for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):
            def without_grad(fn):
                @functools.wraps(fn)
                def call(*args, **kwargs):
                    with torch.no_grad():
                        return fn(*args, **kwargs)
                return call

            setattr(backend, name, without_grad(getattr(backend, name)))
