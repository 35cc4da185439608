"""`python -m axolotl_curriculum plan CONFIG.yml` (the same as `axolotl-curriculum`)."""

import sys

from .commands.cli import main

sys.exit(main())
