"""Teacher checkpoints: the project format, EchoNet-Dynamic's, strict loading.

Project checkpoint format (a ``torch.save`` dict, loadable with ``weights_only=True``)::

    {"format": "echodfkd-teacher", "arch": "unet" | "deeplabv3_resnet50",
     "config": {...constructor keyword arguments...}, "state_dict": {...}, "meta": {...}}
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echodfkd.errors import InputError
from echodfkd.teacher.archs import ARCHS

FORMAT = "echodfkd-teacher"


def _plain(value: Any, what: str) -> Any:
    """A JSON-like copy of ``value`` (so it loads with ``weights_only=True``)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"teacher {what} must be JSON-like (str/int/float/bool/list/dict): {e}")


def save_teacher(path: str | os.PathLike, arch: str, config: Mapping[str, Any],
                 model: nn.Module, meta: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` in the project checkpoint format, atomically (temporary file + rename)."""
    if arch not in ARCHS:
        raise InputError(f"unknown teacher architecture {arch!r}; known: {sorted(ARCHS)}")
    path = Path(path)
    payload = {
        "format": FORMAT, "arch": arch, "config": _plain(dict(config), "config"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": _plain(dict(meta or {}), "meta"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _first(keys: Sequence[str], n: int = 5) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


@dataclass
class Checkpoint:
    """A checkpoint read into memory: architecture, config, CPU state dict, metadata."""

    arch: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    meta: dict


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a project or EchoNet-Dynamic checkpoint with ``torch.load(weights_only=True)``.

    EchoNet-Dynamic format: a dict with ``state_dict`` (keys prefixed ``module.`` by
    DataParallel; the prefix is removed) and training state (``epoch``, ``opt_dict``,
    ``scheduler_dict``, ``best_loss``, ``loss``; numbers kept in ``meta``, the rest dropped).
    A bare DeepLabV3 state dict is accepted too.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"teacher checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise InputError(f"cannot read teacher checkpoint {path!r} with weights_only=True "
                         f"(not a torch checkpoint of plain tensors and numbers?): "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
                         ) from e
    if not isinstance(obj, dict):
        raise InputError(f"teacher checkpoint {path!r} holds a {type(obj).__name__}, "
                         "not a dict")
    keys = [str(k) for k in obj]
    if obj.get("format") == FORMAT:
        missing = [k for k in ("arch", "config", "state_dict") if k not in obj]
        if missing:
            raise InputError(f"teacher checkpoint {path!r} lacks {missing}")
        if obj["arch"] not in ARCHS:
            raise InputError(f"teacher checkpoint {path!r} has unknown arch {obj['arch']!r}; "
                             f"known: {sorted(ARCHS)}")
        return Checkpoint(obj["arch"], dict(obj["config"]), dict(obj["state_dict"]),
                          dict(obj.get("meta") or {}))
    if "format" in obj:
        raise InputError(f"teacher checkpoint {path!r} has unknown format {obj['format']!r} "
                         f"(expected {FORMAT!r})")
    if isinstance(obj.get("state_dict"), dict):
        sd, meta = obj["state_dict"], {"source_format": "echonet-dynamic"}
        for k in ("epoch", "best_loss", "loss"):
            v = obj.get(k)
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                meta[k] = float(v) if isinstance(v, float) else int(v)
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, meta = obj, {"source_format": "state_dict"}
    else:
        raise InputError(f"unknown teacher checkpoint format in {path!r}: neither a project "
                         f"checkpoint ('format': {FORMAT!r}) nor an EchoNet-Dynamic one "
                         f"('state_dict'); top-level keys: {_first(keys, 8)}")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    head = sd.get("classifier.4.weight")
    config = {"num_classes": int(head.shape[0])} if isinstance(head, torch.Tensor) else {}
    return Checkpoint("deeplabv3_resnet50", config, sd, meta)


def load_state_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                      source: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with an error naming ``source`` and
    the first missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_first(shapes, 3)}")
        raise InputError(f"teacher checkpoint {source!r} does not fit "
                         f"{type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)
