"""Small argparse helpers shared by the stage scripts, and the stage entry point :func:`run`."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from echodfkd.errors import InputError


def boolean(text: str) -> bool:
    """Parse a boolean passed on the command line by dvc.yaml (``true``/``false``, ``1``/``0``)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def words(args: list[str]) -> list[str]:
    """Split each argument on whitespace, so that dvc.yaml may pass ``"TRAIN VAL"`` as one word."""
    return [w for arg in args for w in arg.split()]


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run a stage's ``main``: expected errors (:class:`InputError`, a missing file) end in one
    line on stderr and exit status 1; anything else is a bug and keeps its traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main(argv)
    except (InputError, FileNotFoundError) as e:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {text}", file=sys.stderr)
        raise SystemExit(1) from None
