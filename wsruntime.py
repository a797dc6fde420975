"""Entry point: ``python wsruntime.py --port 3002`` (or the ``wsruntime`` console script)."""

from __future__ import annotations

import sys

from wsruntime_ext.app import main

if __name__ == "__main__":
    sys.exit(main())
