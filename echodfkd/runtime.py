"""Where computations run and how files are identified: shared by teacher and student code."""

from __future__ import annotations

import hashlib
import os

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``, ``""`` or ``"auto"``: CUDA when available, else CPU; otherwise ``device``."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def file_sha256(path: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes (read in 4 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
