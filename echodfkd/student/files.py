"""The student file ``student.pt``: save, read and rebuild a trained student.

Kept apart from training so that inference (``infer@*``) depends on this file and the model
only, not on the training code. Format (``STUDENT_FORMAT``): a dict ``{"format", "config",
"state_dict", "meta"}`` of tensors and plain values, loadable with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
import os
import pickle

import torch

from echodfkd.data.store import write_bytes_atomic
from echodfkd.errors import InputError
from echodfkd.student.model import StudentNet

STUDENT_FORMAT = "echodfkd-student"


def clone_state(model: torch.nn.Module) -> dict:
    """A detached CPU copy of ``model.state_dict()`` (tensors only)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def save_student(path: str | os.PathLike, model: StudentNet, meta: dict) -> None:
    """Write ``{"format", "config", "state_dict", "meta"}`` atomically (loadable with
    ``torch.load(weights_only=True)``); ``meta`` must hold only JSON-like values."""
    buf = io.BytesIO()
    torch.save({"format": STUDENT_FORMAT, "config": model.config(),
                "state_dict": clone_state(model), "meta": meta}, buf)
    write_bytes_atomic(path, buf.getvalue())


def read_student(path: str | os.PathLike) -> dict:
    """The raw contents of a ``student.pt`` file (loaded with ``weights_only=True``), checked
    for its format; a pickled or foreign file raises :class:`InputError` naming it."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"student file {str(path)!r} does not exist: run the train stage")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"student file {str(path)!r} is not a weights-only torch file "
                         f"({first[:200]}): use the student.pt written by stages/train.py "
                         f"(it holds only tensors and plain values)") from None
    if not isinstance(ck, dict) or ck.get("format") != STUDENT_FORMAT:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise InputError(f"{str(path)!r} is not an {STUDENT_FORMAT} file (format {found!r}): "
                         f"use the student.pt written by stages/train.py")
    for key in ("config", "state_dict"):
        if key not in ck:
            raise InputError(f"student file {str(path)!r} lacks {key!r}: rerun the train stage")
    return ck


def load_student(path: str | os.PathLike, device: torch.device | str = "cpu") -> StudentNet:
    """Rebuild the student saved by :func:`save_student`, on ``device``, in eval mode."""
    ck = read_student(path)
    try:
        model = StudentNet(**ck["config"])
        model.load_state_dict(ck["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"student file {str(path)!r} does not hold a StudentNet matching its "
                         f"config {ck['config']!r} ({str(exc).splitlines()[0][:200]}): rerun "
                         f"the train stage") from None
    return model.to(device).eval()


def trained_horizon(path: str | os.PathLike) -> int | None:
    """The clip length (frames) the student in ``path`` was trained on: every training clip
    started from a fresh ConvLSTM state and ran ``train.sequence_length`` frames, recorded in
    the file's ``meta["train_config"]``. None when the file does not record it (a student
    saved by other code)."""
    meta = read_student(path).get("meta") or {}
    value = (meta.get("train_config") or {}).get("sequence_length")
    return int(value) if isinstance(value, int) and value > 0 else None
