"""`python -m axolotl_curriculum.demo [workdir]`: the demo (`commands/demo.py`)."""

from .commands.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
