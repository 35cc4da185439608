"""The one kind of error a user must fix, and the one line it is shown as.

A wrong value in the `curriculum:` block, a config `plan` cannot read, data no level can feed:
each is a `CurriculumError` whose message names the key and the fix. The plugin (through
Python's excepthook, under `axolotl train`) and the `axolotl-curriculum` command print it as one
line, without a traceback; anything else keeps its traceback.
"""

from __future__ import annotations

import sys


class CurriculumError(ValueError):
    """A mistake the user must fix: the message names the key (or file) and the fix."""


def error_line(exc: BaseException) -> str | None:
    """The one line for a user's mistake in the curriculum; None for anything else (pydantic's
    errors count only when every one of them is about `curriculum`)."""
    if isinstance(exc, CurriculumError):
        return str(exc)
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ != "ValidationError" or not callable(errors):
        return None
    try:
        messages = [(tuple(e.get("loc") or ()), str(e["msg"]).removeprefix("Value error, "))
                    for e in errors()]
    except Exception:  # noqa: BLE001
        return None
    ours = [msg for loc, msg in messages
            if loc[:1] == ("curriculum",) or (not loc and msg.startswith("curriculum"))]
    return "; ".join(ours) if ours and len(ours) == len(messages) else None


def print_error(line: str, command: str | None = None) -> None:
    """Print `line` as the user's last line: `axolotl-curriculum[ COMMAND]: error: LINE`."""
    sys.stderr.flush()
    print(f"axolotl-curriculum{' ' + command if command else ''}: error: {line}", file=sys.stderr,
          flush=True)
