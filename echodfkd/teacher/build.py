"""Building a teacher directory (the teacher stage): fit, convert or register each member.

The only teacher module that imports the fitting code (:mod:`echodfkd.teacher.fit`); it hands
a ``fit`` callable to the member kinds of :mod:`echodfkd.teacher.members`.
"""

from __future__ import annotations

from dataclasses import dataclass

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from echodfkd.errors import InputError
from echodfkd.runtime import resolve_device
from echodfkd.data.store import FRAME_SIZE, FrameStore
from echodfkd.teacher.members import KINDS, TEACHER_SET_FORMAT, BuildContext, parse_member_specs


def traced_training_set(store: FrameStore, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Traced (ED/ES) frames of one split and their tracing masks.

    Returns (images uint8 (M, 112, 112), masks uint8 (M, 112, 112) 0/1), in ``traced`` order.
    """
    traced = store.traced
    splits = store.index["Split"].to_numpy()[traced["video"].to_numpy(dtype=int)]
    rows = traced[splits == split]
    if rows.empty:
        return (np.zeros((0, FRAME_SIZE, FRAME_SIZE), np.uint8),
                np.zeros((0, FRAME_SIZE, FRAME_SIZE), np.uint8))
    starts = store.index["start"].to_numpy(dtype=int)[rows["video"].to_numpy(dtype=int)]
    frame_ids = starts + rows["frame"].to_numpy(dtype=int)
    images = np.asarray(store.frames.oindex[frame_ids])
    masks = np.asarray(store.traced_masks.oindex[rows["row"].to_numpy(dtype=int)])
    return images, masks


@dataclass(frozen=True)
class TeacherConfig:
    """The ``teacher:`` section of params.yaml: the ``members`` to fuse (each ``fit``,
    ``checkpoint:<file>`` or ``outputs:<folder>``, with an optional ``@<weight>``), the
    labelled source ``fit`` members are fitted on (``fit_source``), their architecture
    (``arch``, ``width``, ``depth``) and fitting recipe (``epochs``, ``batch``, ``lr``,
    ``dice_weight``), and the ``device`` for fitting and teacher_infer ("auto": CUDA when
    available)."""

    members: list[str]
    fit_source: str
    arch: str
    width: int
    depth: int
    epochs: int
    batch: int
    lr: float
    dice_weight: float
    device: str


def make_teacher_dir(out_dir: str | os.PathLike, members: Sequence[Mapping[str, Any]],
                     frames: FrameStore | None, *, arch: str, width: int, depth: int,
                     epochs: int, batch_size: int, lr: float, dice_weight: float, seed: int,
                     device: str | None, progress: bool = True) -> tuple[dict, pd.DataFrame | None]:
    """Fill ``out_dir`` (normally a staging path) with ``member<i>.pt`` and ``teacher.json``.

    "fit" members are fitted (:func:`echodfkd.teacher.fit.fit_teacher`, architecture ``arch``
    with ``width``/``depth``, ``epochs``/``batch_size``/``lr``/``dice_weight``) on the TRAIN
    split's traced frames of ``frames``, VAL for early stopping (fit member k uses ``seed + k``
    unless it gives "seed"); "checkpoint" members are converted to the project format;
    "outputs" members are recorded as given. ``device`` (``teacher.device``): where fitting
    runs; ``"auto"``, ``""`` or None: CUDA when available. Returns (teacher.json contents,
    fit history or None; the history has a "member" column). Does not write the history.
    """
    specs = parse_member_specs(members)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def fit(store: FrameStore, member_seed: int):
        from echodfkd.teacher.fit import fit_teacher
        if arch != "unet":
            raise InputError(f"fitting supports teacher.arch 'unet' only, got {arch!r}")
        ti, tm = traced_training_set(store, "TRAIN")
        vi, vm = traced_training_set(store, "VAL")
        if len(ti) == 0:
            raise InputError(f"{store.path!r} has no traced TRAIN frames to fit a teacher: "
                             "set teacher.fit_source to a labelled source")
        model, hist = fit_teacher(ti, tm, vi, vm, width=width, depth=depth, epochs=epochs,
                                  batch_size=batch_size, lr=lr, dice_weight=dice_weight,
                                  seed=member_seed,
                                  device=str(resolve_device(device)), progress=progress)
        meta = {"fitted_on": store.path, "frames_fingerprint": store.fingerprint,
                "seed": member_seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "dice_weight": dice_weight,
                "n_train": int(len(ti)), "n_val": int(len(vi))}
        return model, {"width": width, "depth": depth}, meta, pd.DataFrame(hist)

    ctx = BuildContext(out_dir, frames, seed, fit)
    entries, histories = [], []
    for i, m in enumerate(specs):
        entry, history = KINDS[m["kind"]].build(i, m, ctx)
        entries.append({"kind": m["kind"], "weight": m["weight"], **entry})
        if history is not None:
            histories.append(history)
    spec = {"format": TEACHER_SET_FORMAT, "members": entries}
    (out_dir / "teacher.json").write_text(json.dumps(spec, indent=2) + "\n")
    history = pd.concat(histories, ignore_index=True) if histories else None
    return spec, history
