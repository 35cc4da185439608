"""Staged input lengths for Axolotl and transformers trainers: short inputs first, longer by level."""

from .core.config import Curriculum, Level

__all__ = ["Curriculum", "CurriculumPlugin", "CurriculumRun", "Level", "attach"]
__version__ = "0.2.0"


def __getattr__(name):
    # Imported lazily so plain transformers/TRL users need not have Axolotl installed.
    if name == "CurriculumPlugin":
        from .integrations.plugin import CurriculumPlugin

        return CurriculumPlugin
    if name == "CurriculumRun":
        from .run.run import CurriculumRun

        return CurriculumRun
    if name == "attach":
        from .integrations.trainer import attach

        return attach
    raise AttributeError(name)
