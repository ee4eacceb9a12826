"""Imported teacher outputs: one cached file per video, as a data owner may share them.

``<FileName>.seg.npz`` (array ``arr_0``, uint8 = sigmoid(logit) * 255, shape (T, 1, H, W), as the
EchoNet research code writes them) or ``<FileName>.npy`` (probabilities or logits). File names
come from the FileList and never escape the folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from echodfkd.errors import InputError
from echodfkd.data.store import FRAME_SIZE
from echodfkd.teacher.fusion import quantise

NPY_VALUES = ("auto", "probability", "logit")
MAX_LISTED = 50  # file names quoted per problem kind in an error message


class TeacherOutputsError(InputError):
    """Problems with a folder of cached teacher outputs; ``problems`` maps kind -> messages."""

    def __init__(self, folder: str, problems: dict[str, list[str]], n_videos: int) -> None:
        self.folder, self.problems = folder, problems
        n_bad = sum(len(v) for v in problems.values())
        parts = []
        for kind, items in problems.items():
            shown = ", ".join(items[:MAX_LISTED])
            more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
            parts.append(f"{kind} ({len(items)}): {shown}{more}")
        super().__init__(f"teacher outputs in {folder!r}: {n_bad} problem(s) over "
                         f"{n_videos} videos; " + "; ".join(parts))


def _safe_name(file_name: str) -> bool:
    return (bool(file_name) and file_name not in (".", "..") and "/" not in file_name
            and "\\" not in file_name and "\x00" not in file_name
            and not os.path.isabs(file_name) and not re.match(r"^[A-Za-z]:", file_name))


def output_file(folder: str | os.PathLike, file_name: str) -> Path | None:
    """The cached-output file of video ``file_name``: ``<folder>/<file_name>.seg.npz``, else
    ``<folder>/<file_name>.npy``; ``None`` if neither exists. Raises ValueError if
    ``file_name`` would escape ``folder`` (path separators, ``..``, absolute names)."""
    folder = Path(folder)
    if not _safe_name(str(file_name)):
        raise InputError(f"FileName {file_name!r} is not a plain file name: it would escape "
                         f"the teacher outputs folder {str(folder)!r}")
    root = folder.resolve()
    for suffix in (".seg.npz", ".npy"):
        p = folder / f"{file_name}{suffix}"
        if p.resolve().parent != root:
            raise InputError(f"FileName {file_name!r} resolves outside {str(folder)!r}")
        if p.is_file():
            return p
    return None


def _header_shape(path: Path) -> tuple[int, ...]:
    """Array shape from the .npy header (inside the .npz for ``.seg.npz``), without the data."""
    def read(f) -> tuple[int, ...]:
        major, _ = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if major == 1
                  else np.lib.format.read_array_header_2_0)
        return tuple(reader(f)[0])

    if path.name.endswith(".npz"):
        with zipfile.ZipFile(path) as z:
            if "arr_0.npy" not in z.namelist():
                raise InputError(f"{str(path)!r} has no array 'arr_0' (has {z.namelist()[:5]})")
            with z.open("arr_0.npy") as f:
                return read(f)
    with open(path, "rb") as f:
        return read(f)


def _frames_axis(shape: tuple[int, ...], path: Path) -> int:
    if len(shape) == 4 and shape[1] == 1:
        return shape[0]
    if len(shape) == 3:
        return shape[0]
    raise InputError(f"{str(path)!r} has shape {shape}; expected (T, 1, H, W) or (T, H, W)")


def _to_probability(a: np.ndarray, values: str, path: Path) -> np.ndarray:
    """Float array -> probabilities in [0, 1] by the rule of :func:`read_teacher_outputs`."""
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError(f"{str(path)!r} holds NaN or infinite values")
    if values == "auto":
        values = "probability" if (a.min() >= 0.0 and a.max() <= 1.0) else "logit"
    if values == "logit":
        return np.exp(-np.logaddexp(np.float32(0), -a))  # sigmoid, no overflow
    if a.min() < 0.0 or a.max() > 1.0:
        raise InputError(f"{str(path)!r}: probabilities outside [0, 1] "
                         f"(min {a.min():.4g}, max {a.max():.4g}); pass values='logit'")
    return a


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    import cv2
    if a.shape[1:] == (size, size):
        return a
    interp = cv2.INTER_AREA if a.shape[1] > size and a.shape[2] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in a])


def read_teacher_outputs(folder: str | os.PathLike, file_name: str, n_frames: int, *,
                         values: str = "auto") -> np.ndarray:
    """Cached teacher output of one video -> uint8 (T, 112, 112), 0..255 = probability * 255.

    ``<FileName>.seg.npz`` (array ``arr_0``) or ``<FileName>.npy``, shape (T, 1, H, W) or
    (T, H, W); other H, W are resized (area when shrinking, bilinear when growing).
    uint8 arrays are taken as p * 255 and returned unchanged at 112x112 (bool as 0/255).
    Float arrays are probabilities or logits, by ``values``: ``"probability"``,
    ``"logit"`` (sigmoid applied), or ``"auto"`` = probabilities if every value lies in
    [0, 1], logits otherwise; they are stored as round(p * 255).
    Raises FileNotFoundError if no file, ValueError if T != ``n_frames`` or the shape is bad.
    """
    if values not in NPY_VALUES:
        raise InputError(f"values must be one of {NPY_VALUES}, got {values!r}")
    path = output_file(folder, file_name)
    if path is None:
        raise FileNotFoundError(f"no teacher output for FileName {file_name!r} in "
                                f"{str(folder)!r} (expected {file_name}.seg.npz or .npy)")
    try:
        if path.name.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                if "arr_0" not in z.files:
                    raise InputError(f"{str(path)!r} has no array 'arr_0' (has {z.files[:5]})")
                a = z["arr_0"]
        else:
            a = np.load(path, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        # e.g. an object (pickled) array, which allow_pickle=False refuses, or a truncated file
        raise InputError(f"cannot read teacher output {str(path)!r} as a plain numeric array "
                         f"(object/pickled arrays are refused; expected uint8 or float "
                         f"(T, 1, H, W) in 'arr_0'): {e}") from None
    t = _frames_axis(a.shape, path)
    if t != n_frames:
        raise InputError(f"{str(path)!r} has {t} frames but video {file_name!r} has "
                         f"{n_frames}")
    a = a.reshape(t, a.shape[-2], a.shape[-1])
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype == np.uint8:
        return np.ascontiguousarray(_resize(a, FRAME_SIZE))
    if not np.issubdtype(a.dtype, np.floating):
        raise InputError(f"{str(path)!r} has dtype {a.dtype}; expected uint8 or float")
    p = _resize(_to_probability(a, values, path), FRAME_SIZE)
    return quantise(p)


def check_teacher_outputs(folder: str | os.PathLike, index: pd.DataFrame) -> None:
    """Check every video of ``index`` (FileName, start, stop) has an output file with the right
    frame count, reading only file headers; raise one :class:`TeacherOutputsError` listing
    the FileNames of all problems."""
    problems: dict[str, list[str]] = {}

    def add(kind: str, msg: str) -> None:
        problems.setdefault(kind, []).append(msg)

    if not Path(folder).is_dir():
        raise FileNotFoundError(f"teacher outputs folder {str(folder)!r} does not exist")
    for name, start, stop in zip(index["FileName"], index["start"], index["stop"]):
        name, n = str(name), int(stop) - int(start)
        try:
            path = output_file(folder, name)
        except ValueError:
            add("unsafe FileName", repr(name))
            continue
        if path is None:
            add("missing", name)
            continue
        try:
            t = _frames_axis(_header_shape(path), path)
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            add("unreadable", f"{name} ({e})")
            continue
        if t != n:
            add("wrong frame count", f"{name} (file {t}, video {n})")
    if problems:
        raise TeacherOutputsError(str(folder), problems, len(index))


def outputs_fingerprint(folder: str | os.PathLike, names) -> str:
    """Fingerprint of the output files of videos ``names`` in ``folder``: SHA-256 (16 hex) over
    each file's name, size and modification time (nanoseconds), from ``stat`` alone, so that
    regenerated files change it without reading tens of thousands of files. Missing files count
    as missing (``check_teacher_outputs`` reports them)."""
    h = hashlib.sha256()
    for name in names:
        try:
            path = output_file(folder, str(name))
        except ValueError:
            path = None
        if path is None:
            h.update(f"{name}|missing\n".encode())
            continue
        st = path.stat()
        h.update(f"{path.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
