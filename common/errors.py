"""User-facing errors: one line on stderr, exit code 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """Bad input from the user (missing file, unknown task, malformed row...).

    The message is printed as one line and the process exits with code 2.
    """


def cli(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a script's ``main`` so a :class:`UserError` becomes ``error: ...`` and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def error_line(exc: BaseException) -> str:
    """``exc`` as one line for a report or a :class:`UserError`: its type, then the first line of its message (at
    most 300 characters)."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0][:300] if message else ''}"
