"""The workbench's error base class.

Every error the project raises on purpose (bad input, a model that cannot load, a store that
cannot be used, a request over a resource limit) derives from ``WorkbenchError``; its message names
the problem and the fix. The CLI and the app catch it by type and show the message as one line
instead of a traceback. It is a ``ValueError`` so that code catching ``ValueError`` keeps working.
"""

from __future__ import annotations

import os


class WorkbenchError(ValueError):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class ResourceLimitError(WorkbenchError):
    """A request whose memory estimate exceeds the limit; the message says how to stay under it."""


def memory_limit_bytes(env: str = "ICLWB_MAX_MEMORY_GB", share: float = 0.5) -> int:
    """Bytes one request may use: ``$ICLWB_MAX_MEMORY_GB`` GiB if set, else ``share`` of the
    machine's physical memory."""

    if os.environ.get(env):
        try:
            return int(float(os.environ[env]) * 2**30)
        except ValueError:
            raise WorkbenchError(f"{env}={os.environ[env]!r} is not a number of GiB; set e.g. "
                                 f"{env}=8") from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 8 * 2**30
    return int(total * share)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"
