"""The first code wsruntime.pyz runs: refuse interpreters older than 3.9 with a clear message.

This file must parse on every Python a user may point at the pyz, Python 2.7
included, so it has no ``from __future__ import annotations``, no f-strings and
no annotations (mypy reads the type comments). Everything else lives in
``wsruntime_pyz.py``, imported only once the version is known to be good.
"""

import sys

MINIMUM = (3, 9)


def refuse_old_python():
    # type: () -> None
    """Exit 2 with a message naming this interpreter when it is too old; return otherwise."""
    if sys.version_info[:2] >= MINIMUM:
        return
    found = ".".join(str(part) for part in sys.version_info[:3])
    sys.stderr.write(
        "wsruntime needs Python 3.9 or newer, but "
        + (sys.executable or "this interpreter")
        + " is Python "
        + found
        + ".\nRun it with a newer interpreter, e.g. python3.11 wsruntime.pyz --port 3002\n"
    )
    sys.exit(2)


if __name__ == "__main__":
    refuse_old_python()
    import wsruntime_pyz

    sys.exit(wsruntime_pyz.main())
