"""A test-only Axolotl plugin: the process dies at the end of optimizer step $CRASH_AT (after the
trainer's own save at that step, as a kill would find it), to test a resume after a crash."""

import os

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


class _Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ["CRASH_AT"]):
            os._exit(3)  # no cleanup, no final save: a kill


class CrashAt(BasePlugin):
    def post_trainer_create(self, cfg, trainer):
        trainer.add_callback(_Crash())
