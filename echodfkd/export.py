"""Portable export of the student: a TorchScript file that runs without this package.

Format: TorchScript, which needs nothing beyond ``torch`` and loads in C++ (libtorch) as well;
``bench/student.py`` reports its frames/s beside the eager model. ONNX would add ``onnx`` and
``onnxruntime`` as dependencies and was not measured. torch 2.13 marks ``torch.jit.save/load``
deprecated in favour of ``torch.export`` (whose saved programs need AOTInductor to run outside
Python); the warning is silenced here, and a move to ``torch.export`` would keep the same
step-wise interface. What is traced is one *time step* of the whole network, ``step(frame, *state)``:

    frame   float32 (B, 1, H, W) in [0, 1], H and W divisible by 2**(blocks-1)
    state   2 * L float32 tensors h_0, c_0, h_1, c_1, ... (L ConvLSTM layers, encoder order),
            layer l of block k: (B, hidden * 2**k, H / 2**k, W / 2**k)
    returns (logits (B, 1, H, W), h_0', c_0', ...)

so the exported file serves videos of any length, state carried across calls, exactly as
``StudentNet.forward`` does (same logits up to float rounding). The network's configuration is
stored beside the graph (extra file ``config.json``), so that :func:`load_exported` can build the
zero state. Load it from C++ with ``torch::jit::load`` or from Python with :func:`load_exported`.

The train stage writes it as ``<out>/student.ts`` (:data:`EXPORT_NAME`).
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from echodfkd.errors import InputError
from echodfkd.models.convlstm import StudentNet
from echodfkd.store import write_bytes_atomic

EXPORT_NAME = "student.ts"
"""File name of the exported student inside the train stage's output folder."""

_CONFIG_FILE = "config.json"


class _Step(nn.Module):
    """One frame through the whole student, state as a flat tuple (traceable)."""

    def __init__(self, net: StudentNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, frame: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]
        logits, new = self.net(frame.unsqueeze(1), state)
        return (logits[:, 0],) + tuple(t for hc in new for t in hc)


def state_shapes(config: dict, batch: int, height: int, width: int) -> list[tuple[int, ...]]:
    """Shapes of the 2 * L state tensors (h, c per ConvLSTM layer) for frames of
    ``height`` x ``width`` pixels (see the module docstring)."""
    shapes = []
    for k in range(config["blocks"]):
        shape = (batch, config["hidden"] * 2 ** k, height // 2 ** k, width // 2 ** k)
        shapes += [shape, shape] * config["layers_per_block"]
    return shapes


def export_student(model: StudentNet, path: str | os.PathLike, *, size: int = 112) -> Path:
    """Trace ``model`` (a copy, in eval mode) as a TorchScript step and write it atomically.

    Args:
        model: the trained student (any device; the export is on CPU).
        path: output file (``<out>/student.ts`` in the pipeline).
        size: side of the square example frame used for tracing; the traced graph serves
            any frame size divisible by ``2 ** (blocks - 1)``.
    Returns:
        ``path`` as a Path.
    """
    net = copy.deepcopy(model).cpu().eval()
    config = net.config()
    example = (torch.zeros(1, 1, size, size),) + tuple(
        torch.zeros(s) for s in state_shapes(config, 1, size, size))
    with warnings.catch_warnings():
        # the input checks of StudentNet.forward are Python branches on shapes: the trace
        # keeps the branch taken (input valid); the loader re-checks the shapes itself
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
        with torch.no_grad():
            traced = torch.jit.trace(_Step(net), example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf, _extra_files={_CONFIG_FILE: json.dumps(config)})
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path


class ExportedStudent:
    """A loaded TorchScript student with :class:`StudentNet`'s calling convention.

    ``student(x, state)``: ``x`` float32 (B, T, 1, H, W) in [0, 1], ``state`` None (zeros) or
    the list of (h, c) returned by the previous call -> (logits (B, T, 1, H, W), state).
    """

    def __init__(self, module: torch.jit.ScriptModule, config: dict, source: str) -> None:
        self.module, self.config, self.source = module, config, source

    def __call__(self, x: torch.Tensor, state: list[tuple[torch.Tensor, torch.Tensor]] | None
                 = None) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        f = 2 ** (self.config["blocks"] - 1)
        if x.dim() != 5 or x.shape[2] != 1 or x.shape[3] % f or x.shape[4] % f:
            raise InputError(f"{self.source}: expected input (B, T, 1, H, W) with H and W "
                             f"divisible by {f}, got shape {tuple(x.shape)}; reshape the "
                             f"frames or crop them to a multiple of {f}")
        b, _, _, hh, ww = x.shape
        if state is None:
            flat = [x.new_zeros(s) for s in state_shapes(self.config, b, hh, ww)]
        else:
            flat = [t for hc in state for t in hc]
            want = state_shapes(self.config, b, hh, ww)
            if [tuple(t.shape) for t in flat] != want:
                raise InputError(f"{self.source}: the state does not match {b} videos of "
                                 f"{hh}x{ww} frames (expected shapes {want}); pass the state "
                                 f"returned by the previous call on the same videos, or None")
        out = []
        with torch.no_grad():
            for frame in x.unbind(1):
                logits, *flat = self.module(frame, *flat)
                out.append(logits)
        return (torch.stack(out, 1),
                [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)])


def load_exported(path: str | os.PathLike) -> ExportedStudent:
    """Load a file written by :func:`export_student` (on CPU)."""
    extra = {_CONFIG_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see the module docstring
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (FileNotFoundError, ValueError) as e:
        if not Path(path).exists():
            raise FileNotFoundError(f"exported student {str(path)!r} does not exist: run the "
                                    f"train stage") from None
        raise InputError(f"{str(path)!r} is not a TorchScript file ({e}); re-export it with "
                         f"echodfkd.export.export_student") from None
    except RuntimeError as e:
        raise InputError(f"{str(path)!r} is not a TorchScript file ({str(e).splitlines()[0]}); "
                         f"re-export it with echodfkd.export.export_student") from None
    if not extra[_CONFIG_FILE]:
        raise InputError(f"{str(path)!r} has no {_CONFIG_FILE}: it was not written by "
                         f"echodfkd.export.export_student; re-export the student")
    return ExportedStudent(module.eval(), json.loads(extra[_CONFIG_FILE]), str(path))
