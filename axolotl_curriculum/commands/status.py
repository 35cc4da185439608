"""The one handler for a user's mistake in a command: one line on stderr and exit status 2.

`cli.main` runs each subcommand through it; `report.run` too, so that from Python it returns the
exit status as the command line does (docs/report.md). Anything else keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from ..core.errors import CurriculumError, print_error


def exit_status(command: str, fn: Callable[..., int | None], *args) -> int:
    """`fn(*args)`'s own status (0 for None), or 2 after `axolotl-curriculum COMMAND: error: ...`
    for a `CurriculumError` or a missing file."""
    try:
        return fn(*args) or 0
    except (CurriculumError, FileNotFoundError) as exc:
        print_error(str(exc), command)
        return 2
