"""bf16 training on a CPU through `axolotl train`, for benchmarks and tests.

The trainer refuses bf16 without a GPU unless its `use_cpu` is set, and Axolotl has no key for
it; a plugin's `get_training_args` can return it. Kept out of the curriculum plugin: moving a run
onto the CPU is not the curriculum's business. List it after the curriculum plugin:

    plugins: [axolotl_curriculum.CurriculumPlugin, axolotl_curriculum.testing.cpu_bf16.CpuBf16Plugin]
    bf16: true
"""

from __future__ import annotations

from axolotl.integrations.base import BasePlugin


class CpuBf16Plugin(BasePlugin):
    def get_training_args(self, cfg):
        import torch

        if cfg.bf16 is True and not torch.cuda.is_available():
            return {"use_cpu": True}
        return None
