"""Echo phantom: apical-4-chamber-like videos in the EchoNet layouts, with exact ground truth.

The project cannot download real echo data, so it generates its own (docs/design.md §5). A set is
written in the EchoNet-Dynamic layout (``style="real"``) or the EchoNet-Synthetic layout
(``style="synthetic"``)::

    <out_dir>/Videos/<FileName>.avi        112x112 MJPG, 3 identical grey channels
    <out_dir>/FileList.csv                 FileName, EF, ESV, EDV, FrameHeight, FrameWidth,
                                           FPS, NumberOfFrames, Split
    <out_dir>/VolumeTracings.csv           (real style) FileName (with .avi), X1, Y1, X2, Y2,
                                           Frame: 21 rows per traced frame, one ED + one ES
    <out_dir>/GroundTruth/<FileName>.npz   masks uint8 (T, 112, 112) 0/1 LV cavity per frame,
                                           ed int64 (all ED frame numbers), es int64 (all ES)
    <out_dir>/GroundTruth/phantom.json     how the set was made (style, seed, sizes)

Image coordinates: x = column (0..111, left to right), y = row (0..111, top to bottom); pixel
(row, col) has its centre at (y, x) = (row, col). The probe sits at the top centre; the fan
opens downwards. The heart is modelled in a local frame whose origin is the LV apex: ``u`` runs
along the LV long axis from the apex (u = 0) to the mitral annulus (u = L), ``v`` across it,
positive towards the lateral wall (image right). The LV cavity is
``0 <= u <= L and -wl(u/L) <= v <= wr(u/L)``, a bullet whose half-widths follow a per-video
profile (possibly with a hypokinetic segment). Its volume is computed by the method of discs
(circular discs of diameter wl + wr); the ES length and width are chosen so that ESV/EDV is
exactly 1 - EF/100.

Difficulty (docs/design.md §5): a teacher fitted on the traced frames must not find the boundary
trivially. What makes it ambiguous here: trabeculae inside the cavity contour that echo like
the wall, wall thickness varying along the wall, lateral / apical / septal dropout, apex
clutter, a per-video image quality (hazy blood, noise, wider PSF), lateral resolution falling
with depth, leaflets hinging off the true annulus plane, hypokinetic segments, and annotators
who trace slightly different edges. Calibrated so that the default teacher (UNet width 8,
depth 3, 30 epochs) scores Dice ~0.94 against the ground truth at ED/ES on TEST.

Every video draws from its own random stream ``SeedSequence(seed, spawn_key=(split, i))``, so
video i of a split does not depend on how many videos the set has. Its length is ``frames``, or,
in the splits of ``echonet_lengths``, an EchoNet-Dynamic-like length drawn from a separate
stream ``(split, i, 1)`` (median ~175 frames, 100-400, ~5% up to 700).

Modules: :mod:`~echodfkd.data.phantom.heart` (the heart model: styles' looks, sampling of a
video's heart, EF and frame rate, LV shape and volumes, the cardiac cycle, ED/ES frames),
:mod:`~echodfkd.data.phantom.render` (frame geometry, fan, speckle, the renderer),
:mod:`~echodfkd.data.phantom.tracings` (EchoNet tracings of a frame, their polygon),
:mod:`~echodfkd.data.phantom.writer` (one video in memory, a set on disk, seeds, file names)
and :mod:`~echodfkd.data.phantom.preview` (the preview montage). The names below are
re-exported here; importing the package does no work beyond importing these modules.
"""

from __future__ import annotations

from echodfkd.data.phantom.heart import (LOOKS, STYLES, Heart, Look, extreme_frames,
                                         volume_ml)
from echodfkd.data.phantom.preview import render_preview
from echodfkd.data.phantom.render import SIZE
from echodfkd.data.phantom.tracings import N_CHORDS, TRACING_COLUMNS, tracing_polygon
from echodfkd.data.phantom.writer import (FILELIST_COLUMNS, FORMAT_VERSION, SPLITS, PhantomSet,
                                          echonet_length, generate_set, make_video,
                                          video_length, write_avi)

__all__ = ["FILELIST_COLUMNS", "FORMAT_VERSION", "LOOKS", "N_CHORDS", "SIZE", "SPLITS", "STYLES",
           "PhantomSet",
           "TRACING_COLUMNS", "Heart", "Look", "echonet_length", "extreme_frames", "generate_set",
           "make_video", "render_preview", "tracing_polygon", "video_length", "volume_ml",
           "write_avi"]
