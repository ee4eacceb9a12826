"""Where computations run and how files are identified: shared by teacher and student code."""

from __future__ import annotations

import hashlib
import os

import torch

from echodfkd.errors import InputError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``, ``""`` or ``"auto"``: CUDA when available, else CPU; otherwise ``device``."""
    if device is None or device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def set_threads(threads: int) -> None:
    """Use ``threads`` torch CPU threads (``train.threads``); 0 leaves torch's default (all
    cores). A negative count raises :class:`~echodfkd.errors.InputError`."""
    if threads < 0:
        raise InputError(f"train.threads must be >= 0 (0: all cores), got {threads!r}")
    if threads > 0:
        torch.set_num_threads(threads)


def file_sha256(path: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of a file's bytes (read in 4 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def teacher_batch(requested: int, device: str | torch.device | None) -> int:
    """Frames per teacher forward pass: ``requested`` when > 0; 0 chooses for the device:
    64 on the CPU (larger batches gain nothing there), on CUDA 32 frames per GiB of GPU memory
    (a conservative estimate, not yet measured on a GPU here), at most 1024."""
    if requested > 0:
        return requested
    dev = resolve_device(device)
    if dev.type != "cuda":
        return 64
    gib = torch.cuda.get_device_properties(dev).total_memory / 2**30
    return int(min(1024, max(16, 32 * gib)))
