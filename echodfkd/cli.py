"""Small argparse helpers shared by the stage scripts."""

from __future__ import annotations

import argparse


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
