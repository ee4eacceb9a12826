"""Teacher members and the one registry of member kinds.

A teacher is one or several *members*, fused by :func:`echodfkd.teacher.fusion.fuse_probabilities`.
params.yaml writes each as ``KIND[:PATH][@WEIGHT]`` (:func:`parse_member_text`). Every kind is
described once, in :data:`KINDS`:

- ``build``: what the teacher stage does for it (write ``member<i>.pt`` and/or return the
  ``teacher.json`` entry);
- ``load``: how inference turns that entry back into a :class:`Member`.

Kinds: ``fit`` (fit the light UNet on traced frames; the fitting itself is injected by
:mod:`echodfkd.teacher.build`, so inference never imports training code), ``checkpoint`` (an
EchoNet-Dynamic or project checkpoint, converted to the project format) and ``outputs`` (a folder
of cached outputs, used as it is).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from echodfkd.errors import InputError
from echodfkd.runtime import file_sha256
from echodfkd.data.store import FRAME_SIZE, FrameStore
from echodfkd.teacher.archs import build_model
from echodfkd.teacher.checkpoint import load_state_strict, read_checkpoint, save_teacher
from echodfkd.teacher.model import cached_teacher
from echodfkd.teacher.outputs import (NPY_VALUES, check_teacher_outputs, outputs_fingerprint,
                                      read_teacher_outputs)

TEACHER_SET_FORMAT = "echodfkd-teacher-set"

Videos = list[tuple[str, int, int]]  # (FileName, start, stop) in the concatenated frame axis


class Member(Protocol):
    """A teacher member: per block of frames, probabilities float in [0, 1] or uint8 p*255.

    ``predict_block(frames, start, stop, videos, ...)``: ``frames`` uint8 (stop-start, 112, 112)
    (``None`` if ``needs_frames`` is False), ``videos`` the index rows overlapping the block;
    returns an array of shape (stop-start, 112, 112). Must be picklable for dask.distributed.
    ``describe(index)`` identifies the member *and the content it reads* for ``index``'s videos:
    it keys resumption, so a changed checkpoint or regenerated output files restart inference.
    ``at(cwd)``: the same member with its relative paths taken from directory ``cwd`` (a
    distributed worker's working directory is not the driver's).
    """

    weight: float
    needs_frames: bool

    def describe(self, index: pd.DataFrame) -> dict: ...

    def at(self, cwd: str) -> "Member": ...

    def validate(self, index: pd.DataFrame) -> None: ...

    def predict_block(self, frames: np.ndarray | None, start: int, stop: int, videos: Videos,
                      *, batch_size: int, device: str | None, amp: bool) -> np.ndarray: ...


@dataclass
class ModelMember:
    """A checkpoint run on the frames; loaded once per process (:func:`cached_teacher`)."""

    path: str
    weight: float = 1.0
    needs_frames: bool = True

    def describe(self, index: pd.DataFrame | None = None) -> dict:
        return {"kind": "model", "path": self.path, "weight": self.weight,
                "sha256": file_sha256(self.path)}

    def at(self, cwd: str) -> "ModelMember":
        return replace(self, path=os.path.join(cwd, self.path))

    def validate(self, index: pd.DataFrame) -> None:
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"teacher checkpoint {self.path!r} does not exist: rerun "
                                    "the teacher stage")

    def predict_block(self, frames, start, stop, videos, *, batch_size, device, amp):
        return cached_teacher(self.path, device, amp=amp).predict_proba(frames, batch_size)


@dataclass
class OutputsMember:
    """A folder of cached per-video outputs (see :func:`read_teacher_outputs`)."""

    folder: str
    weight: float = 1.0
    values: str = "auto"
    needs_frames: bool = False

    def describe(self, index: pd.DataFrame | None = None) -> dict:
        d = {"kind": "outputs", "folder": self.folder, "weight": self.weight,
             "values": self.values}
        if index is not None:
            d["files"] = outputs_fingerprint(self.folder, index["FileName"])
        return d

    def at(self, cwd: str) -> "OutputsMember":
        return replace(self, folder=os.path.join(cwd, self.folder))

    def validate(self, index: pd.DataFrame) -> None:
        check_teacher_outputs(self.folder, index)

    def predict_block(self, frames, start, stop, videos, *, batch_size, device, amp):
        out = np.zeros((stop - start, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        covered = 0
        for name, v0, v1 in videos:
            a = read_teacher_outputs(self.folder, name, v1 - v0, values=self.values)
            s, e = max(v0, start), min(v1, stop)
            out[s - start:e - start] = a[s - v0:e - v0]
            covered += max(0, e - s)
        if covered != stop - start:
            raise ValueError(f"videos cover {covered} of the {stop - start} frames "
                             f"[{start}, {stop})")
        return out


@dataclass
class BuildContext:
    """What the teacher stage gives a kind's ``build``: the output folder, the labelled frame
    store (or None), the member's index and a ``fit(frames, seed) -> (model, config, meta,
    history)`` callable (``None`` when fitting is not available)."""

    out_dir: Path
    frames: FrameStore | None
    seed: int
    fit: Callable[[FrameStore, int], tuple[Any, dict, dict, pd.DataFrame]] | None
    n_fit: int = 0


def _build_fit(i: int, spec: dict, ctx: BuildContext) -> tuple[dict, pd.DataFrame | None]:
    if ctx.frames is None:
        raise InputError("a 'fit' teacher member needs a labelled frame store with tracings "
                         "(teacher.fit_source)")
    if ctx.fit is None:
        raise InputError("'fit' members can only be built by the teacher stage")
    seed = int(spec.get("seed", ctx.seed + ctx.n_fit))
    ctx.n_fit += 1
    model, config, meta, history = ctx.fit(ctx.frames, seed)
    save_teacher(ctx.out_dir / f"member{i}.pt", "unet", config, model.cpu(), meta)
    return ({"path": f"member{i}.pt", "arch": "unet", "config": config, "seed": seed},
            history.assign(member=i))


def _build_checkpoint(i: int, spec: dict, ctx: BuildContext) -> tuple[dict, None]:
    ckpt = read_checkpoint(spec["path"])
    model = build_model(ckpt.arch, ckpt.config)
    load_state_strict(model, ckpt.state_dict, spec["path"])
    save_teacher(ctx.out_dir / f"member{i}.pt", ckpt.arch, ckpt.config, model,
                 {**ckpt.meta, "source": str(spec["path"])})
    return ({"path": f"member{i}.pt", "arch": ckpt.arch, "config": ckpt.config,
             "source": str(spec["path"])}, None)


def _build_outputs(i: int, spec: dict, ctx: BuildContext) -> tuple[dict, None]:
    if not Path(spec["path"]).is_dir():
        raise FileNotFoundError(f"teacher outputs folder {spec['path']!r} does not exist "
                                "(teacher.members outputs:<folder>)")
    return {"path": str(spec["path"]), "values": spec.get("values", "auto")}, None


def _load_model(entry: dict, teacher_dir: Path) -> Member:
    return ModelMember(str(teacher_dir / entry["path"]), float(entry["weight"]))


def _load_outputs(entry: dict, teacher_dir: Path) -> Member:
    return OutputsMember(entry["path"], float(entry["weight"]), entry.get("values", "auto"))


@dataclass(frozen=True)
class MemberKind:
    """One kind of teacher member: whether it needs a PATH, how the teacher stage builds it
    (``build(i, spec, ctx) -> (teacher.json entry, fit history or None)``) and how inference
    loads it (``load(entry, teacher_dir) -> Member``)."""

    needs_path: bool
    build: Callable[[int, dict, BuildContext], tuple[dict, pd.DataFrame | None]]
    load: Callable[[dict, Path], Member]


KINDS: dict[str, MemberKind] = {
    "fit": MemberKind(False, _build_fit, _load_model),
    "checkpoint": MemberKind(True, _build_checkpoint, _load_model),
    "outputs": MemberKind(True, _build_outputs, _load_outputs),
}


def parse_member_text(spec: str) -> dict:
    """Parse one member written as ``KIND[:PATH][@WEIGHT]`` (params.yaml's ``teacher.members``).

    ``fit``, ``fit@2``, ``checkpoint:models/x.pt``, ``outputs:/data/seg@0.5`` ->
    ``{"kind", "path", "weight"}`` (validate the list with :func:`parse_member_specs`).
    """
    body, _, weight = spec.strip().partition("@")
    kind, _, path = body.partition(":")
    try:
        w = float(weight) if weight else 1.0
    except ValueError:
        raise InputError(f"teacher.members entry {spec!r}: weight {weight!r} is not a number "
                         "(write KIND[:PATH][@WEIGHT], e.g. fit@2)") from None
    return {"kind": kind, "path": path, "weight": w}


def parse_member_specs(members: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Validate ``[{"kind": one of KINDS, "path": str, "weight": float}, ...]`` (``path`` unused
    for "fit"; optional "seed" for "fit", "values" for "outputs")."""
    if not isinstance(members, Sequence) or not members:
        raise InputError(f"teacher.members must be a non-empty list (params.yaml), got {members!r}")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, Mapping) or m.get("kind") not in KINDS:
            raise InputError(f"teacher.members entry {i} {m!r}: kind must be one of {sorted(KINDS)}")
        m = dict(m)
        m["weight"] = float(m.get("weight", 1.0))
        if not math.isfinite(m["weight"]) or m["weight"] < 0:
            raise InputError(f"teacher.members entry {i} {m!r}: weight must be a number >= 0")
        if KINDS[m["kind"]].needs_path and not m.get("path"):
            raise InputError(f"teacher.members entry {i} {m!r}: {m['kind']} needs a path "
                             f"({m['kind']}:<path>)")
        if m["kind"] == "outputs" and m.get("values", "auto") not in NPY_VALUES:
            raise InputError(f"teacher.members entry {i} {m!r}: 'values' must be one of {NPY_VALUES}")
        out.append(m)
    if sum(m["weight"] for m in out) <= 0:
        raise InputError(f"teacher.members weights sum to 0: {members!r}")
    return out


def load_members(teacher_dir: str | os.PathLike) -> list[Member]:
    """Members of a teacher directory written by the teacher stage (``teacher.json``):
    checkpoint paths are relative to the directory, output folders as written."""
    teacher_dir = Path(teacher_dir)
    spec_path = teacher_dir / "teacher.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{str(spec_path)!r} does not exist: run the teacher stage")
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != TEACHER_SET_FORMAT:
        raise InputError(f"{str(spec_path)!r} has format {spec.get('format')!r}, "
                         f"expected {TEACHER_SET_FORMAT!r}: rerun the teacher stage")
    members: list[Member] = []
    for i, m in enumerate(spec["members"]):
        if m.get("kind") not in KINDS:
            raise InputError(f"{str(spec_path)!r} member {i}: unknown kind {m.get('kind')!r}; "
                             f"known: {sorted(KINDS)}")
        members.append(KINDS[m["kind"]].load(m, teacher_dir))
    return members


def teacher_cost(members: Sequence[Member]) -> dict:
    """Cost of the (fused) teacher for reports: ``{"weights": int|None, "flops": int|None}``.

    Trainable weights and FLOPs per 112x112 frame (see :mod:`echodfkd.cost`), summed over the
    model members; None when a member is imported outputs (its model is unknown).
    """
    from echodfkd.cost import count_weights, flops_per_frame

    weights = flops = 0
    for m in members:
        if not isinstance(m, ModelMember):
            return {"weights": None, "flops": None}
        ck = read_checkpoint(m.path)
        model = build_model(ck.arch, ck.config)
        weights += count_weights(model)
        flops += flops_per_frame(model, "image")
    return {"weights": weights, "flops": flops}
