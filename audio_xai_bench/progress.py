"""Progress bars only where someone watches: on a terminal, and never with ``--quiet``.

Every long loop of the suite goes through :func:`bar`; logs written to a file or a pipe
(CI, Slurm, ``--log-file``) then hold the summary lines, not hundreds of bar redraws.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

QUIET = False  # set by the CLI's --quiet


def enabled() -> bool:
    return not QUIET and sys.stderr.isatty()


def bar(iterable: Any = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``, disabled off a terminal, with ``--quiet`` or when the
    caller says so (``disable=True``)."""
    return tqdm(iterable, disable=bool(disable) or not enabled(), **kwargs)
