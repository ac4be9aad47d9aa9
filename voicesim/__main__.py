"""``python -m voicesim``."""

from __future__ import annotations

import sys

from voicesim.cli import main

if __name__ == "__main__":
    sys.exit(main())
