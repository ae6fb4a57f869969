"""``python -m treadle``."""

import sys

from .runtime.cli import main

sys.exit(main())
