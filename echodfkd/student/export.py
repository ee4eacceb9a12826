"""Portable export of the student: TorchScript (``student.ts``) and ONNX (``student.onnx``)
(docs/design.md §3, "Export").

What is exported is one *time step* of the whole network, ``step(frame, *state)``:

    frame   float32 (B, 1, H, W) in [0, 1], H and W divisible by 2**(blocks-1)
    state   2 * L float32 tensors h_0, c_0, h_1, c_1, ... (L ConvLSTM layers, encoder order),
            layer l of block k: (B, hidden * 2**k, H / 2**k, W / 2**k)
    returns (logits (B, 1, H, W), h_0', c_0', ...)

so an exported file serves videos of any length, state carried across calls, exactly as
``StudentNet.forward`` does (same logits up to float rounding). The network's configuration is
stored beside the graph, so that the loaders can build the zero state. Both loaders return an
object with ``StudentNet``'s calling convention (``student(x, state) -> (logits, state)``).

- :func:`export_student` -> ``student.ts`` (:data:`EXPORT_NAME`): a TorchScript trace, needs
  nothing beyond ``torch``, loads in C++ (``torch::jit::load``) or with :func:`load_exported`;
  config in the extra file ``config.json``. torch 2.13 marks ``torch.jit.save/load``
  deprecated in favour of ``torch.export`` (whose saved programs need AOTInductor to run outside
  Python); the warning is silenced here.
- :func:`export_student_onnx` -> ``student.onnx`` (:data:`ONNX_NAME`): ONNX opset
  :data:`ONNX_OPSET`, named inputs/outputs (:func:`onnx_names`), symbolic batch/height/width
  axes, config as the metadata entry ``config``; run with onnxruntime
  (:func:`load_exported_onnx`) or any ONNX runtime. Exporting needs the ``onnx`` package.

Why both, by measurement (``bench/student.py --sections 4``: 1 video x 32 frames at 112x112,
state carried, eager ``StudentNet`` under ``inference_mode`` vs the TorchScript step vs the ONNX
step in onnxruntime 1.31 ``CPUExecutionProvider``, 7 interleaved rounds, medians; 2-core EPYC
shared with a training job, ``OMP_WAIT_POLICY=PASSIVE``, onnxruntime spinning off; two runs,
noise (p75-p25)/median of the times <= 0.075)::

    student          threads  eager fps  TorchScript (x eager)  onnxruntime (x eager)  ORT/TS
    default 3x1x6       1     208-210    185-186 (0.85-0.89)    308-314 (1.45-1.48)    1.63-1.69
    default 3x1x6       2     184-187    155-162 (0.81-0.89)    268-297 (1.51-1.62)    1.78-1.87
    paper 3x3x12        1     29.5-32.3  28.6-29.4 (0.92-0.97)  35.8-36.2 (1.14-1.21)  1.24-1.25
    paper 3x3x12        2     28.5-30.7  26.5-28.1 (0.92-0.93)  30.3-32.5 (1.06-1.07)  1.15-1.16

Parity with eager over the whole video (logits and final state): TorchScript <= 1.5e-8,
ONNX <= 4.2e-7. onnxruntime is 1.6-1.9x TorchScript on the pipeline's students (one ConvLSTM
layer per block, hidden 3-6) and 1.15-1.25x on the paper's: hence the ONNX artifact, for
deployment; TorchScript stays, as the torch-only / libtorch format. (Without
``OMP_WAIT_POLICY=PASSIVE`` torch's 2-thread rows collapsed to 1-4 frames/s on the busy
machine, onnxruntime's did not: a thread-scheduling artifact, not a format property.)

How the ONNX file is made: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based
exporter (deprecated in torch 2.13, still shipped; ``torch`` is pinned). It traces
``StudentNet``'s plain ops (``torch.jit.is_tracing()``). The ``dynamo=True`` exporter was
measured too: it needs ``onnxscript`` in addition, takes ~6 s to export the default student
(0.5 s here), and traces the in-place inference loop into ScatterND/Slice chains that
onnxruntime ran 2x slower (95 vs 204 frames/s, default student, 1 thread); with ``net.fused = False`` it gives the same
graph speed as the TorchScript-based one (219 vs 203 frames/s, paper 20.8 vs 21.3), which is the
way to go when torch drops the old exporter (batch example >= 2, ``Dim`` height/width as
multiples of ``2**(blocks-1)``). The ONNX bytes are the same from one export to the next.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from echodfkd.errors import InputError
from echodfkd.student.model import StudentNet
from echodfkd.data.store import write_bytes_atomic

EXPORT_NAME = "student.ts"
"""File name of the exported student inside the train stage's output folder."""

ONNX_NAME = "student.onnx"
"""File name of the ONNX export inside the train stage's output folder."""

ONNX_OPSET = 17
"""ONNX opset of :func:`export_student_onnx` (onnxruntime >= 1.14 runs it)."""

_CONFIG_FILE = "config.json"
_CONFIG_KEY = "config"


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


class _StepRunner:
    """Runs an exported one-frame step over videos, with :class:`StudentNet`'s calling
    convention: ``student(x, state)``, ``x`` float32 (B, T, 1, H, W) in [0, 1] (CPU), ``state``
    None (zeros) or the list of (h, c) returned by the previous call on the same videos ->
    (logits float32 (B, T, 1, H, W), state). Subclasses provide :meth:`_steps`."""

    def __init__(self, config: dict, source: str) -> None:
        self.config, self.source = config, source

    def _steps(self, frames: tuple[torch.Tensor, ...], flat: list[torch.Tensor]
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Frames (B, 1, H, W) one after the other from state ``flat`` -> (logits per frame,
        final flat state)."""
        raise NotImplementedError

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
        out, flat = self._steps(x.unbind(1), flat)
        return (torch.stack(out, 1),
                [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)])


class ExportedStudent(_StepRunner):
    """A loaded TorchScript student (:func:`load_exported`); called as :class:`_StepRunner`."""

    def __init__(self, module: torch.jit.ScriptModule, config: dict, source: str) -> None:
        super().__init__(config, source)
        self.module = module

    def _steps(self, frames, flat):
        out = []
        with torch.no_grad():
            for frame in frames:
                logits, *flat = self.module(frame, *flat)
                out.append(logits)
        return out, flat


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
                         f"echodfkd.student.export.export_student") from None
    except RuntimeError as e:
        raise InputError(f"{str(path)!r} is not a TorchScript file ({str(e).splitlines()[0]}); "
                         f"re-export it with echodfkd.student.export.export_student") from None
    if not extra[_CONFIG_FILE]:
        raise InputError(f"{str(path)!r} has no {_CONFIG_FILE}: it was not written by "
                         f"echodfkd.student.export.export_student; re-export the student")
    return ExportedStudent(module.eval(), json.loads(extra[_CONFIG_FILE]), str(path))


def onnx_names(config: dict) -> tuple[list[str], list[str]]:
    """Input and output names of the ONNX step: ``frame, h_0, c_0, h_1, c_1, ...`` ->
    ``logits, h_0_out, c_0_out, ...`` (layers in encoder order, as :func:`state_shapes`)."""
    layers = config["blocks"] * config["layers_per_block"]
    state = [f"{hc}_{i}" for i in range(layers) for hc in ("h", "c")]
    return ["frame"] + state, ["logits"] + [f"{n}_out" for n in state]


def export_student_onnx(model: StudentNet, path: str | os.PathLike, *, size: int = 112) -> Path:
    """Export ``model`` (a copy, in eval mode) as an ONNX step and write it atomically.

    The graph is the step of the module docstring, with named inputs and outputs
    (:func:`onnx_names`) and symbolic batch, height and width axes: one file serves any batch
    and any frame size divisible by ``2 ** (blocks - 1)``. Opset :data:`ONNX_OPSET`; the
    network's configuration is stored as the model metadata entry ``config`` (JSON). Needs the
    ``onnx`` package (the exporter serialises through it); running it needs ``onnxruntime``
    (:func:`load_exported_onnx`) or any ONNX runtime.

    Args:
        model: the trained student (any device; the export is on CPU).
        path: output file (``<out>/student.onnx`` in the pipeline, :data:`ONNX_NAME`).
        size: side of the square example frame used for tracing.
    Returns:
        ``path`` as a Path.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting the student to ONNX needs the onnx package: "
                          "pip install onnx") from None
    # the trace runs StudentNet's plain ops (torch.jit.is_tracing() is true under this
    # exporter); the wrapper is put in eval mode too: the exporter restores the training flag
    # of the module it is given, recursively
    step = _Step(copy.deepcopy(model).cpu().eval()).eval()
    config = step.net.config()
    example = (torch.zeros(1, 1, size, size),) + tuple(
        torch.zeros(s) for s in state_shapes(config, 1, size, size))
    inputs, outputs = onnx_names(config)
    axes = {"frame": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"}}
    level = [k for k in range(config["blocks"]) for _ in range(2 * config["layers_per_block"])]
    for name_in, name_out, k in zip(inputs[1:], outputs[1:], level):
        axes[name_in] = axes[name_out] = {0: "batch", 2: f"height/{2 ** k}", 3: f"width/{2 ** k}"}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # see export_student
        # torch 2.13 marks this (TorchScript-based) exporter deprecated: see the module docstring
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(step, example, buf, input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    proto.metadata_props.append(onnx.StringStringEntryProto(key=_CONFIG_KEY,
                                                             value=json.dumps(config)))
    path = Path(path)
    write_bytes_atomic(path, proto.SerializeToString())
    return path


class OnnxStudent(_StepRunner):
    """A loaded ONNX student (:func:`load_exported_onnx`), run by onnxruntime on the CPU;
    called as :class:`_StepRunner` (torch tensors in and out, converted to float32 numpy)."""

    def __init__(self, session, config: dict, source: str) -> None:
        super().__init__(config, source)
        self.session = session
        self.inputs, _ = onnx_names(config)

    def _steps(self, frames, flat):
        state = [np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32) for t in flat]
        out = []
        for frame in frames:
            feed = dict(zip(self.inputs, [np.ascontiguousarray(
                frame.detach().cpu().numpy(), dtype=np.float32)] + state))
            logits, *state = self.session.run(None, feed)
            out.append(torch.from_numpy(logits))
        return out, [torch.from_numpy(s) for s in state]


def load_exported_onnx(path: str | os.PathLike, *, threads: int = 0, spinning: bool = True
                       ) -> OnnxStudent:
    """Load a file written by :func:`export_student_onnx` into an onnxruntime CPU session.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime intra-op threads (0: onnxruntime's default, one per physical
            core); inter-op execution is sequential.
        spinning: let idle onnxruntime threads busy-wait for work (its default, fastest on
            an idle machine); False when other thread pools (torch's) share the cores.
    Raises:
        ImportError: onnxruntime is not installed.
        FileNotFoundError: ``path`` does not exist.
        InputError: the file is not an ONNX model written by :func:`export_student_onnx`.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("running the ONNX student needs onnxruntime: "
                          "pip install onnxruntime") from None
    if not Path(path).is_file():
        raise FileNotFoundError(f"exported student {str(path)!r} does not exist: run the "
                                f"train stage")
    if threads < 0:
        raise InputError(f"threads={threads}: must be >= 0 (0: onnxruntime's default)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's errors derive from Exception only
        raise InputError(f"{str(path)!r} is not an ONNX model ({str(e).splitlines()[0]}); "
                         f"re-export it with echodfkd.student.export.export_student_onnx") from None
    meta = session.get_modelmeta().custom_metadata_map
    if _CONFIG_KEY not in meta:
        raise InputError(f"{str(path)!r} has no {_CONFIG_KEY!r} metadata: it was not written "
                         f"by echodfkd.student.export.export_student_onnx; re-export the student")
    config = json.loads(meta[_CONFIG_KEY])
    want, _ = onnx_names(config)
    got = [i.name for i in session.get_inputs()]
    if got != want:
        raise InputError(f"{str(path)!r}: inputs {got} do not match its config {config} "
                         f"(expected {want}); re-export the student")
    return OnnxStudent(session, config, str(path))
