"""Browser-playable segmentation videos of one echo video (docs/design.md §4), in the manner of
echonet/dynamic's segmentation output: the echo with the outlines of the student, the teacher and
the human tracing, above the area curves with a cursor at the current frame.

Drawn with numpy and OpenCV only (no matplotlib figure per frame): the static part of each frame
(legend, curves, ED/ES markers) is drawn once, and per frame only the echo, its outlines, the
cursor and the frame label. Rendering 200 frames at ``scale=3`` takes about 0.06 s of one core.

Frame layout (uint8 RGB, rows top to bottom; width ``W * scale``):

- echo panel, ``H * scale`` rows: the grey frame upscaled (linear interpolation), with the
  outlines (``cv2.findContours`` of the binarised masks at 112×112, each vertex moved to the centre
  of its pixel at the upscaled resolution, drawn 2 px wide without anti-aliasing) of the human
  tracing (green, on traced frames only), the teacher (orange) and the student (blue, on top);
  the colours are matplotlib's tab:green / tab:orange / tab:blue, as in :mod:`plots`;
- one text row: the frame index (0-based) and whether it is a traced or a found ED/ES frame;
- the legend, wrapped onto as many rows as the width needs; "teacher: not run on this source"
  replaces the teacher entry when there is no teacher;
- the area panel: area curves (foreground pixels of the binarised masks per frame) of teacher and
  student over the whole video, scaled to their common min..max (printed below them); found ED
  (▼) / ES (▲) frames marked on the student curve; traced ED/ES frames as dashed green vertical
  lines labelled "ED"/"ES"; a white vertical cursor and dot at the current frame.

Encoding (:func:`encode_video`): MP4, H.264 (libx264, CRF 26, preset ``superfast``, mbtree off,
one thread), yuv420p, even dimensions (an odd width or height is padded by one black column or
row), ``+faststart`` (the index first, so a browser plays it while it loads). Backends, in order
of preference, the first available one being used:

1. ``pyav`` (PyAV, ``av`` on PyPI: FFmpeg's libraries in-process, libx264 included);
2. ``imageio-ffmpeg`` (a static ffmpeg binary fed raw RGB through a pipe);
3. ``webp``: animated WebP through Pillow (no H.264 needed; plays in every current browser as an
   ``<img>``), written with the ``.webp`` suffix.

Measured with ``bench/report_video.py`` (one 200-frame phantom video, 336×496 px at 50 fps,
render + encode streamed by :func:`write_video`, median of 5 rounds, pinned to one core of the
2-core development machine; "same bytes": two fresh processes writing it three times each)::

    encoder                      write s  frames/s  size KB  same bytes  installed MB
    pyav                         0.44     458       647      yes         107 (av + av.libs)
    imageio-ffmpeg               0.51     396       653      yes         173 (ffmpeg binary)
    webp (Pillow)                1.12     178       3,349    yes         (already installed)
    pyav, veryfast + mbtree      0.81     248       520      NO          107
    imageio-ffmpeg, same         0.83     240       524      yes         173

(``render_frames`` alone: 0.06 s.) PyAV is chosen: 14% faster than imageio-ffmpeg (no process
start, no pipe copy of the raw RGB), the same size, 38% less to install, and the same bytes on
every run at these settings; imageio-ffmpeg is the second choice. WebP is 2.6× slower and 5×
larger. ``superfast`` at CRF 26 halves the encode time of ``veryfast`` at CRF 23 (0.39 against
0.73 s, 647 against 737 KB) with no visible loss on the outlines. mbtree stays off
(``X264_PARAMS``) because PyAV's bundled libx264 with mbtree on (the default from ``veryfast``
up) writes different bytes on the first encode of a process than on later ones; ``superfast``
has no lookahead, so this costs nothing now and guards a slower preset. Re-run the benchmark
to update these figures.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from echodfkd.errors import InputError
from echodfkd.evaluation import metrics as M

STUDENT_RGB = (31, 119, 180)      # matplotlib tab:blue
TEACHER_RGB = (255, 127, 14)      # tab:orange
HUMAN_RGB = (44, 160, 44)         # tab:green
CURSOR_RGB = (255, 255, 255)
TEXT_RGB = (210, 210, 210)
PANEL_RGB = (24, 24, 24)          # background of the text rows and the area panel

NO_TEACHER_LABEL = "teacher: not run on this source"

#: H.264 backends first; :func:`encode_video` uses the first available one.
BACKENDS = ("pyav", "imageio-ffmpeg", "webp")
CRF = 26
PRESET = "superfast"
#: libx264 options beyond CRF/preset; see the module docstring for why mbtree is off.
X264_PARAMS = "mbtree=0"

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.4
_ROW_H = 16                       # pixels per text row
_PAD = 4
_OUTLINE_PX = 2
_PHASES = ("ED", "ES")


# ----------------------------------------------------------------------------- validation

def _check_threshold(threshold) -> float:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number in (0, 1), got {threshold!r}") from None
    if not 0.0 < t < 1.0:
        raise InputError(f"threshold must be in the open interval (0, 1), got {threshold!r}")
    return t


def _check_fps(fps) -> Fraction:
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"fps must be a positive number, got {fps!r}") from None
    if not (math.isfinite(f) and f > 0):
        raise InputError(f"fps must be a positive finite number, got {fps!r}")
    rate = Fraction(f).limit_denominator(1001)
    if rate <= 0:
        raise InputError(f"fps {fps!r} is too small to encode")
    return rate


def _frame_index(value, n: int, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{what} must be an integer frame index, got {value!r}")
    if not 0 <= int(value) < n:
        raise InputError(f"{what} = {int(value)} is outside the video (frames 0..{n - 1})")
    return int(value)


def _masks(name: str, masks, shape: tuple[int, ...], threshold: float) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.shape != shape:
        raise InputError(f"{name} has shape {masks.shape}, frames have shape {shape}; "
                         f"{name} must be (T, H, W) like frames")
    if not (masks.dtype in (np.uint8, bool) or np.issubdtype(masks.dtype, np.floating)):
        raise InputError(f"{name} must be uint8 round(p*255) (or bool, or float p in 0..1), "
                         f"got dtype {masks.dtype}")
    return np.ascontiguousarray(M.binarize(masks, threshold))


# ----------------------------------------------------------------------------- drawing helpers

def _text_width(text: str) -> int:
    return cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)[0][0]


def _put_text(img: np.ndarray, text: str, x: int, baseline_y: int, rgb) -> None:
    cv2.putText(img, text, (int(x), int(baseline_y)), _FONT, _FONT_SCALE, rgb, 1, cv2.LINE_AA)


def _swatch(img: np.ndarray, kind: str, rgb, x: int, y: int) -> None:
    """Draw a 14-px legend symbol whose left end is at x, vertically centred on y."""
    if kind == "line":
        cv2.line(img, (x, y), (x + 13, y), rgb, _OUTLINE_PX, cv2.LINE_8)
    elif kind == "tri_down":
        cv2.drawMarker(img, (x + 7, y), rgb, cv2.MARKER_TRIANGLE_DOWN, 9, 1, cv2.LINE_8)
    elif kind == "tri_up":
        cv2.drawMarker(img, (x + 7, y), rgb, cv2.MARKER_TRIANGLE_UP, 9, 1, cv2.LINE_8)
    elif kind == "dash":
        img[y - 6:y + 7:4, x + 7] = rgb
        img[y - 5:y + 7:4, x + 7] = rgb


def _legend(items: list[tuple[str, tuple, str]], width: int) -> np.ndarray:
    """Legend rows (uint8 RGB (n_rows * _ROW_H, width, 3)): ``items`` (kind, rgb, label) placed
    left to right, wrapped when the next one would not fit."""
    placed, x, row = [], _PAD, 0
    for kind, rgb, label in items:
        w = (18 if kind else 0) + _text_width(label)
        if x > _PAD and x + w > width - _PAD:
            x, row = _PAD, row + 1
        placed.append((kind, rgb, label, x, row))
        x += w + 12
    img = np.empty(((row + 1) * _ROW_H, width, 3), np.uint8)
    img[:] = PANEL_RGB
    for kind, rgb, label, x, r in placed:
        mid = r * _ROW_H + _ROW_H // 2
        if kind:
            _swatch(img, kind, rgb, x, mid)
            x += 18
        _put_text(img, label, x, mid + 4, TEXT_RGB)
    return img


def _outline(img: np.ndarray, mask: np.ndarray, rgb, scale: int) -> None:
    """Draw the boundaries of bool (H, W) ``mask`` on ``img`` (H*scale, W*scale, 3)."""
    contours, _ = cv2.findContours(mask.view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    if contours:
        off = scale // 2
        cv2.drawContours(img, [c * scale + off for c in contours], -1, rgb,
                         _OUTLINE_PX if scale > 1 else 1, cv2.LINE_8)


# ----------------------------------------------------------------------------- rendering

class _Renderer:
    """Validated inputs and the static part of the frames; ``frame(t)`` draws one frame."""

    def __init__(self, frames, student, teacher, traced, *, threshold, found, traced_frames,
                 scale=3):
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (T, H, W), got shape {frames.shape} "
                             f"dtype {frames.dtype}")
        if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, np.integer)) \
                or not 1 <= int(scale) <= 16:
            raise InputError(f"scale must be an integer in 1..16, got {scale!r}")
        t_n, h, w = frames.shape
        s = self.scale = int(scale)
        threshold = _check_threshold(threshold)
        self.frames = frames
        self.n = t_n
        self.student = _masks("student", student, frames.shape, threshold)
        self.teacher = (None if teacher is None
                        else _masks("teacher", teacher, frames.shape, threshold))

        if not isinstance(traced, Mapping):
            raise InputError(f"traced must be a dict {{frame: bool (H, W) mask}}, "
                             f"got {type(traced).__name__}")
        self.traced = {}
        for f, m in traced.items():
            f = _frame_index(f, t_n, "traced frame")
            m = np.asarray(m)
            if m.shape != (h, w):
                raise InputError(f"traced[{f}] has shape {m.shape}, frames are {(h, w)} "
                                 f"(frames shape {frames.shape})")
            self.traced[f] = np.ascontiguousarray(m != 0)
        self.found = self._phase_frames(found, "found", many=True)
        self.traced_frames = self._phase_frames(traced_frames, "traced_frames", many=False)

        self.echo_h, self.width = h * s, w * s
        s_area = M.area_curve(self.student)
        t_area = None if self.teacher is None else M.area_curve(self.teacher)

        # Legend.
        items = [("line", STUDENT_RGB, "student")]
        items.append(("line", TEACHER_RGB, "teacher") if self.teacher is not None
                     else ("", TEXT_RGB, NO_TEACHER_LABEL))
        items += [("line", HUMAN_RGB, "human tracing"),
                  ("tri_down", STUDENT_RGB, "found ED"), ("tri_up", STUDENT_RGB, "found ES"),
                  ("dash", HUMAN_RGB, "traced ED/ES")]
        legend = _legend(items, self.width)

        # Area panel: its height makes the whole frame height even (for yuv420p).
        plot_h = max(64, self.width // 3)
        total = self.echo_h + _ROW_H + legend.shape[0] + plot_h
        plot_h += total % 2
        self.height = total + total % 2
        self.info_y = self.echo_h
        plot_y = self.echo_h + _ROW_H + legend.shape[0]

        base = np.empty((self.height, self.width, 3), np.uint8)
        base[:] = PANEL_RGB
        base[self.echo_h + _ROW_H:plot_y] = legend
        plot = base[plot_y:]
        x0, x1 = _PAD + 2, self.width - _PAD - 3
        y0, y1 = 16, plot_h - _ROW_H - 2                 # curve band; labels above and below
        self.xs = (np.full(t_n, (x0 + x1) // 2) if t_n == 1
                   else x0 + np.rint(np.arange(t_n) * (x1 - x0) / (t_n - 1)).astype(np.int64))
        curves = [s_area] + ([] if t_area is None else [t_area])
        lo = min(int(c.min()) for c in curves)
        hi = max(int(c.max()) for c in curves)
        lab = f"area, px: {lo}..{hi}" if hi > lo else f"area, px: {lo} (constant)"
        _put_text(plot, lab, _PAD, plot_h - 5, TEXT_RGB)
        if hi == lo:
            lo, hi = lo - 1, hi + 1

        def ys(a):
            return y1 - np.rint((a - lo) * (y1 - y0) / (hi - lo)).astype(np.int64)

        for phase in _PHASES:                             # traced ED/ES: dashed green lines
            f = self.traced_frames.get(phase)
            if f is None:
                continue
            x = int(self.xs[f])
            for y in range(y0, y1 + 1, 5):
                plot[y:min(y + 3, y1 + 1), x] = HUMAN_RGB
            tw = _text_width(phase)
            _put_text(plot, phase, min(max(x - tw // 2, 0), self.width - tw), y0 - 4, HUMAN_RGB)
        for area, rgb in ([] if t_area is None else [(t_area, TEACHER_RGB)]) + \
                [(s_area, STUDENT_RGB)]:
            pts = np.stack([self.xs, ys(area)], axis=1).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(plot, [pts], False, rgb, 1, cv2.LINE_AA)
        self.s_y = ys(s_area)
        for phase, marker in (("ED", cv2.MARKER_TRIANGLE_DOWN), ("ES", cv2.MARKER_TRIANGLE_UP)):
            for f in self.found.get(phase, []):
                cv2.drawMarker(plot, (int(self.xs[f]), int(self.s_y[f])), STUDENT_RGB, marker,
                               9, 1, cv2.LINE_8)
        self.base = base
        self.plot_y = plot_y
        self.curve_rows = (y0, y1)

    def _phase_frames(self, d, what: str, many: bool) -> dict:
        if d is None:
            return {}
        if not isinstance(d, Mapping):
            raise InputError(f"{what} must be a dict keyed by 'ED'/'ES', got {type(d).__name__}")
        out = {}
        for phase, v in d.items():
            if phase not in _PHASES:
                raise InputError(f"{what} has key {phase!r}; expected 'ED' and/or 'ES'")
            if many:
                vals = [v] if isinstance(v, (int, np.integer)) else list(v)
                out[phase] = [_frame_index(f, self.n, f"{what}[{phase!r}] frame") for f in vals]
            elif v is not None:
                out[phase] = _frame_index(v, self.n, f"{what}[{phase!r}]")
        return out

    def frame(self, t: int) -> np.ndarray:
        """Frame ``t``: uint8 RGB (height, width, 3)."""
        s = self.scale
        img = np.empty_like(self.base)
        img[self.echo_h:] = self.base[self.echo_h:]
        echo = img[:self.echo_h]                         # whole rows: C-contiguous
        interp = cv2.INTER_NEAREST if s == 1 else cv2.INTER_LINEAR
        grey = cv2.resize(self.frames[t], (self.width, self.echo_h), interpolation=interp)
        cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB, dst=echo)
        if t in self.traced:
            _outline(echo, self.traced[t], HUMAN_RGB, s)
        if self.teacher is not None:
            _outline(echo, self.teacher[t], TEACHER_RGB, s)
        _outline(echo, self.student[t], STUDENT_RGB, s)

        tags = [f"traced {p}" for p in _PHASES if self.traced_frames.get(p) == t]
        tags += [f"found {p}" for p in _PHASES if t in self.found.get(p, ())]
        info = f"frame {t} of 0..{self.n - 1}" + ("   " + ", ".join(tags) if tags else "")
        _put_text(img, info, _PAD, self.info_y + _ROW_H - 4, TEXT_RGB)

        x = int(self.xs[t])
        y0, y1 = self.curve_rows
        img[self.plot_y + y0:self.plot_y + y1 + 1, x] = CURSOR_RGB
        cv2.circle(img, (x, self.plot_y + int(self.s_y[t])), 3, CURSOR_RGB, -1, cv2.LINE_8)
        return img

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.frame(t) for t in range(self.n))


def render_frames(frames, student, teacher, traced, *, threshold, found, traced_frames,
                  scale=3) -> np.ndarray:
    """Render the segmentation video of one echo video.

    ``frames``: uint8 (T, H, W) grey echo (112×112 in this project), axes (frame, row y,
    column x). ``student``: uint8 (T, H, W) soft masks round(p*255) (bool or float p in 0..1
    also accepted); ``teacher``: the same, or None for a source the teacher does not label.
    ``traced``: {frame index: bool (H, W) human tracing mask}, outlined on those frames only
    (may be empty). ``threshold``: float in (0, 1); a pixel is foreground when p > threshold
    (uint8: value > threshold*255, as in :func:`metrics.binarize`). ``found``: {"ED": [frames],
    "ES": [frames]} found on the student's area curve (a single int is accepted too; keys may be
    missing). ``traced_frames``: {"ED": f, "ES": f} traced ED/ES frames (keys may be missing).
    ``scale``: integer upscaling of the echo panel, 1..16. Frame indices are 0-based.

    Returns uint8 RGB (T, H_out, W_out, 3) with W_out = W*scale and H_out even (the layout is
    in the module docstring). Raises :class:`InputError` for mismatched shapes or dtypes (naming
    them), a threshold outside (0, 1), or a frame index outside 0..T-1.
    """
    r = _Renderer(frames, student, teacher, traced, threshold=threshold, found=found,
                  traced_frames=traced_frames, scale=scale)
    out = np.empty((r.n, r.height, r.width, 3), np.uint8)
    for t in range(r.n):
        out[t] = r.frame(t)
    return out


# ----------------------------------------------------------------------------- encoding

@functools.cache
def _unavailable(backend: str) -> str | None:
    """None when ``backend`` can encode here, else why not (checked once per process)."""
    try:
        if backend == "pyav":
            import av
            if "libx264" not in av.codecs_available:
                return "PyAV has no libx264 encoder"
        elif backend == "imageio-ffmpeg":
            import imageio_ffmpeg
            exe = imageio_ffmpeg.get_ffmpeg_exe()
            listing = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True,
                                     text=True, timeout=60).stdout
            if " libx264 " not in listing:
                return f"{exe} has no libx264 encoder"
        elif backend == "webp":
            from PIL import features
            if not features.check("webp"):
                return "Pillow was built without WebP"
        else:
            return f"unknown backend (expected one of {', '.join(BACKENDS)})"
    except (ImportError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def available_backends() -> list[str]:
    """The encoders of :data:`BACKENDS` usable here, in order of preference."""
    return [b for b in BACKENDS if _unavailable(b) is None]


def _encode_pyav(frames: Iterable[np.ndarray], h: int, w: int, rate: Fraction, tmp: Path):
    import av

    with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as c:
        st = c.add_stream("libx264", rate=rate, options={"crf": str(CRF), "preset": PRESET,
                                                         "x264-params": X264_PARAMS})
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.codec_context.thread_count = 1                # one core; same bytes every run
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            c.mux(st.encode(vf))
        c.mux(st.encode(None))


def _encode_imageio(frames: Iterable[np.ndarray], h: int, w: int, rate: Fraction, tmp: Path):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.write_frames(
        str(tmp), (w, h), pix_fmt_in="rgb24", pix_fmt_out="yuv420p", fps=rate, quality=None,
        codec="libx264", macro_block_size=1, ffmpeg_log_level="error",
        output_params=["-crf", str(CRF), "-preset", PRESET, "-x264-params", X264_PARAMS,
                       "-threads", "1", "-movflags", "+faststart", "-f", "mp4"])
    gen.send(None)
    try:
        for f in frames:
            gen.send(f)
    finally:
        gen.close()


def _encode_webp(frames: Iterable[np.ndarray], h: int, w: int, rate: Fraction, tmp: Path):
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:],
                   duration=1000 / float(rate), loop=0, quality=80, method=0)


_ENCODERS = {"pyav": (_encode_pyav, ".mp4"), "imageio-ffmpeg": (_encode_imageio, ".mp4"),
             "webp": (_encode_webp, ".webp")}


def _even(frames: Iterable[np.ndarray], h: int, w: int) -> Iterator[np.ndarray]:
    """Pad each (h, w, 3) frame with a black row/column to even height/width, C-contiguous."""
    for f in frames:
        if h % 2 or w % 2:
            f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)))
        yield np.ascontiguousarray(f)


def _encode(frames: Iterable[np.ndarray], h: int, w: int, path, fps,
            backend: str | None) -> Path:
    rate = _check_fps(fps)
    if backend is None:
        usable = available_backends()
        if not usable:
            raise InputError("no video encoder available: install PyAV (pip install av) or "
                             "imageio-ffmpeg, or Pillow with WebP; "
                             + "; ".join(f"{b}: {_unavailable(b)}" for b in BACKENDS))
        backend = usable[0]
    elif backend not in _ENCODERS:
        raise InputError(f"unknown video backend {backend!r}; expected one of "
                         f"{', '.join(BACKENDS)}")
    elif (why := _unavailable(backend)) is not None:
        raise InputError(f"video backend {backend!r} is not available here: {why}")
    encode, suffix = _ENCODERS[backend]
    final = Path(path).with_suffix(suffix)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.stem + ".tmp" + suffix)
    he, we = h + h % 2, w + w % 2
    try:
        encode(_even(frames, h, w), he, we, rate, tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def encode_video(rgb, path, fps, *, backend: str | None = None) -> Path:
    """Write uint8 RGB ``rgb`` (T, H, W, 3), T >= 1, as a browser-playable video at ``fps``
    frames per second (float > 0), atomically (a ``<stem>.tmp<suffix>`` file renamed).

    With the default ``backend=None`` the first available of :data:`BACKENDS` is used: MP4/H.264
    (yuv420p, ``+faststart``) through PyAV or imageio-ffmpeg, else animated WebP through Pillow.
    An odd H or W is padded by one black row/column (H.264 yuv420p needs even sizes). The suffix
    of ``path`` is replaced by that of the format written (``.mp4`` or ``.webp``); returns the
    path actually written. ``backend`` forces one encoder (InputError when it is not available).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8 or rgb.shape[0] < 1:
        raise InputError(f"rgb must be uint8 (T, H, W, 3) with T >= 1, got shape {rgb.shape} "
                         f"dtype {rgb.dtype}")
    _, h, w, _ = rgb.shape
    return _encode(iter(rgb), h, w, path, fps, backend)


def write_video(path, frames, student, teacher, traced, *, threshold, found, traced_frames,
                fps, scale=3, backend: str | None = None) -> Path | None:
    """Render (:func:`render_frames`) and encode (:func:`encode_video`) one video, streaming
    the frames to the H.264 encoder (memory of one frame, not T; the WebP fallback holds all T).
    Arguments as there; ``scale`` and ``backend`` are passed on. Returns the path written, or
    None (writing nothing) when the video has fewer than 2 frames; the caller lists it as
    skipped. Inputs are validated (InputError) before that check.
    """
    r = _Renderer(frames, student, teacher, traced, threshold=threshold, found=found,
                  traced_frames=traced_frames, scale=scale)
    _check_fps(fps)
    if r.n < 2:
        return None
    return _encode(iter(r), r.height, r.width, path, fps, backend)


# ----------------------------------------------------------------------------- selection

def select_examples(per_video, n: int, *, score: str = "dice_ed") -> list[str]:
    """FileNames of the videos to render: the worst-scoring and a few typical ones.

    ``per_video``: the evaluate stage's per-video table (pandas DataFrame with FileName, the
    score columns and skip_reason). A video's score is the mean of ``dice_ed`` and ``dice_es``
    when ``score`` is one of them and both columns are present, else the ``score`` column;
    higher is better. Rows with a non-empty ``skip_reason`` or a NaN score are left out.

    Of the ``n`` names, ``n - n // 2`` are the lowest scores (worst first) and ``n // 2`` the
    remaining rows closest to the median score of all eligible rows (closest first): n=4 gives 2
    worst and 2 typical. Ties are broken by FileName, so every run picks the same videos.
    ``n`` >= 0 (InputError otherwise); n larger than the eligible rows returns all of them.
    """
    import pandas as pd

    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"n (evaluate.n_examples) must be an integer >= 0, got {n!r}")
    if not isinstance(per_video, pd.DataFrame):
        raise InputError(f"per_video must be a pandas DataFrame, got {type(per_video).__name__}")
    if "FileName" not in per_video.columns:
        raise InputError("per_video has no FileName column")
    if score in ("dice_ed", "dice_es") and {"dice_ed", "dice_es"} <= set(per_video.columns):
        values = (pd.to_numeric(per_video["dice_ed"], errors="coerce")
                  + pd.to_numeric(per_video["dice_es"], errors="coerce")) / 2
    elif score in per_video.columns:
        values = pd.to_numeric(per_video[score], errors="coerce")
    else:
        raise InputError(f"per_video has no column {score!r} to rank videos by "
                         f"(columns: {', '.join(map(str, per_video.columns))})")
    names = per_video["FileName"].astype(str)
    keep = values.notna().to_numpy(dtype=bool, copy=True)
    if "skip_reason" in per_video.columns:
        reason = per_video["skip_reason"]
        keep &= (reason.isna() | (reason.astype(str).str.strip() == "")).to_numpy(dtype=bool)
    table = pd.DataFrame({"name": names[keep].to_numpy(),
                          "score": values[keep].to_numpy(dtype=np.float64)})
    dup = table["name"][table["name"].duplicated()]
    if len(dup):
        raise InputError(f"per_video has FileName {dup.iloc[0]!r} on more than one row")
    if n == 0 or table.empty:
        return []
    n_worst = n - n // 2
    ranked = table.sort_values(["score", "name"], kind="mergesort")
    worst = ranked["name"].iloc[:n_worst].tolist()
    rest = ranked.iloc[n_worst:].copy()
    rest["dist"] = (rest["score"] - float(table["score"].median())).abs()
    typical = rest.sort_values(["dist", "name"], kind="mergesort")["name"].iloc[:n // 2].tolist()
    return worst + typical
