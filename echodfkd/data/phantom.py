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
video i of a split does not depend on how many videos the set has.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echodfkd.data.echonet import read_video
from echodfkd.data.store import commit, partial_path

SIZE = 112
STYLES = ("real", "synthetic")
SPLITS = ("TRAIN", "VAL", "TEST", "EXTRA")
N_CHORDS = 20
FILELIST_COLUMNS = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                    "NumberOfFrames", "Split"]
TRACING_COLUMNS = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
FORMAT_VERSION = 1

# Polar speckle grid: samples along each beam and number of beams across the fan.
_NR, _NA = 128, 96


@dataclass(frozen=True)
class Look:
    """Ultrasound appearance of a style (the domain gap between the two sets lives here).

    Lengths are in pixels (or polar grid samples for the speckle), levels in dB.
    """

    speckle_axial: float      # speckle correlation (Gaussian sigma) along the beam, samples
    speckle_lateral: float    # across beams, beams
    speckle_rho: tuple[float, float]  # frame-to-frame correlation of the speckle field
    speckle_contrast: float   # 1 = fully developed speckle; < 1 = smoothed texture
    psf_lateral: float        # point spread across the beams (Gaussian sigma), beams
    psf_axial: float          # along the beams, samples
    post_blur: float          # blur of the final image, px (0 = none)
    dynamic_range_db: tuple[float, float]
    gain_db: tuple[float, float]
    gamma: tuple[float, float]
    blood_db: tuple[float, float]     # (good window, poor window), dB; quality interpolates
    dropout: tuple[float, float]  # strength of the lateral-wall dropout
    clutter_db: tuple[float, float]  # apex clutter level (good, poor)
    noise_db: tuple[float, float]    # electronic noise floor (good, poor)
    trabeculae: tuple[float, float]  # depth of the tissue inside the LV contour, px
    quality_beta: tuple[float, float]  # Beta(a, b) distribution of the image quality


LOOKS = {
    "real": Look(speckle_axial=0.8, speckle_lateral=1.0, speckle_rho=(0.2, 0.5),
                 speckle_contrast=1.0, psf_lateral=1.8, psf_axial=0.8, post_blur=0.0,
                 dynamic_range_db=(44.0, 52.0), gain_db=(-4.0, 3.0), gamma=(0.9, 1.15),
                 blood_db=(-42.0, -24.0), dropout=(0.5, 1.0), clutter_db=(-24.0, -4.0),
                 noise_db=(-62.0, -40.0), trabeculae=(2.5, 7.0),
                 quality_beta=(2.2, 1.4)),
    # A diffusion model's look: smoother, more persistent speckle, a little blur, less dynamic
    # range. Close enough to "real" that a student distilled on it transfers (as EchoNet-
    # Synthetic does to EchoNet-Dynamic), different enough to make a measurable domain gap.
    "synthetic": Look(speckle_axial=1.1, speckle_lateral=1.4, speckle_rho=(0.45, 0.7),
                      speckle_contrast=0.8, psf_lateral=2.2, psf_axial=1.0, post_blur=0.6,
                      dynamic_range_db=(40.0, 46.0), gain_db=(-2.0, 4.0), gamma=(0.8, 1.0),
                      blood_db=(-38.0, -22.0), dropout=(0.5, 1.0), clutter_db=(-22.0, -6.0),
                      noise_db=(-62.0, -44.0), trabeculae=(2.5, 7.0),
                      quality_beta=(3.0, 1.5)),
}


@dataclass(frozen=True)
class Heart:
    """Per-video anatomy, cycle and acquisition parameters (lengths in px, angles in rad)."""

    fps: int
    n_frames: int
    hr_bpm: float
    period: float            # frames per cardiac cycle
    systole: float           # fraction of the cycle spent in systole
    t_ed0: float             # time (frames) of the first end-diastole, may be negative
    ef: float                # percent
    alpha: float             # share of the volume change taken by the length
    length_ed: float         # LV long axis at ED
    width_ed: float          # LV largest diameter (profile = 1) at ED
    cap: float               # fraction of the long axis covered by the apical cap
    cap_exp: float           # apical cap exponent (smaller = blunter apex)
    taper: float             # narrowing of the LV towards the annulus
    asym: float              # lateral bulge (wr > wl) in mid-ventricle
    wobble: float            # S-shaped deformation of the walls
    ripple: float            # third harmonic of the wall shape
    hypokinesis: float       # 0 = none, 1 = a segment keeps its ED width (akinetic)
    hypo_center: float       # its position, fraction of L
    hypo_width: float
    hypo_lateral: bool       # on the lateral (True) or septal wall
    wall: float              # LV wall thickness at ED
    septum: float            # septal thickness
    thicken: float           # systolic wall thickening factor
    rv_start: float          # RV apex position along u, fraction of L
    rv_width: float          # RV largest width, fraction of W
    la_len: float            # LA semi-axis along u, fraction of L
    la_wid: float            # LA semi-axis across, relative to half the LV width at ED
    annulus_offset: float    # where the leaflets hinge, px along the axis from the true base
    valve_db: float          # leaflet echo relative to the myocardium
    ra_wid: float            # RA semi-axis across, relative to the tricuspid half-width
    apex_x: float
    apex_y: float
    tilt: float              # LV axis angle from the image vertical, + = base to the right
    cm_per_px: float
    sector_y0: float         # fan apex (probe) row
    sector_half: float       # fan half-angle
    sector_radius: float
    drop_lateral: float      # lateral wall dropout strength 0..1
    drop_center: float       # where along the wall (fraction of L)
    drop_width: float
    drop_apex: float         # apical myocardium dropout 0..1
    drop_septal: float       # septal dropout 0..1
    drop_septal_center: float
    clutter_db: float
    quality: float           # image quality 0 (poor acoustic window) .. 1 (good)
    psf_scale: float         # PSF widening in poor windows
    noise_db: float
    clutter_depth: float     # px below the apex
    papillary: float         # papillary muscle size px (0 = none)
    papillary_pos: float     # fraction of L
    trab: float              # trabeculation depth px (cavity tissue the contour runs outside)
    rv_wall: float           # RV free wall thickness px
    ias: float               # half thickness of the interatrial septum px
    ias_drop: float          # interatrial septum dropout dB
    clutter_size: float      # radial extent of the apex clutter px
    bg_var: float            # spatial variation of the tissue around the heart dB
    myo_db: float            # myocardium level
    bg_db: float             # tissue around the heart
    peri_db: float           # pericardium
    blood_db: float
    atten: float             # depth attenuation, nepers over the sector radius
    gain_db: float
    gain_drift_db: float
    dynamic_range_db: float
    gamma: float
    speckle_rho: float


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _sample_ef(rng: np.random.Generator, style: str) -> float:
    """EF in percent: mostly normal function, a tail of reduced EF (EchoNet-like)."""
    if rng.uniform() < 0.78:
        ef = rng.normal(60.0, 7.0)
    else:
        ef = rng.uniform(15.0, 52.0)
    if style == "synthetic":
        return float(int(np.clip(round(ef), 10, 90)))
    return float(np.clip(ef, 10.0, 85.0))


def _sample_heart(rng: np.random.Generator, style: str, fps: int, n_frames: int) -> Heart:
    look = LOOKS[style]
    hr = rng.uniform(50.0, 120.0)
    systole = rng.uniform(0.30, 0.38)
    period = 60.0 / hr * fps
    # Short videos: speed the heart up so that an ED and the following ES fit inside.
    period = min(period, max(8.0, (n_frames - 6) / (systole + 0.1)))
    hr = 60.0 * fps / period
    lo, hi = 2.0, max(2.0, n_frames - 3 - systole * period)
    first = rng.uniform(lo, min(hi, lo + period))  # an ED at `first`, its ES still inside
    t_ed0 = first - period * math.ceil(first / period)  # an ED at or before frame 0
    length = rng.uniform(46.0, 60.0)
    ef = _sample_ef(rng, style)
    # Image quality: most windows good, a tail of poor ones (hazy cavities, clutter, noise).
    q = float(rng.beta(*look.quality_beta))

    def poor(good_poor: tuple[float, float], jitter: float) -> float:
        good, bad = good_poor
        noise = rng.normal(0.0, jitter) if jitter else 0.0
        return float(good + (bad - good) * (1.0 - q) + noise)

    return Heart(
        fps=fps, n_frames=n_frames, hr_bpm=float(hr), period=float(period),
        systole=float(systole), t_ed0=float(t_ed0), ef=ef,
        alpha=float(rng.uniform(0.15, 0.35)),
        length_ed=float(length), width_ed=float(length * rng.uniform(0.52, 0.66)),
        cap=float(rng.uniform(0.4, 0.65)), cap_exp=float(rng.uniform(0.45, 0.75)),
        taper=float(rng.uniform(0.05, 0.2)), asym=float(rng.uniform(-0.08, 0.2)),
        wobble=float(rng.uniform(-0.1, 0.1)), ripple=float(rng.uniform(-0.05, 0.05)),
        hypokinesis=float(rng.uniform(0.4, 1.0) if rng.uniform() < (0.7 if ef < 45 else 0.25)
                          else 0.0),
        hypo_center=float(rng.uniform(0.15, 0.85)), hypo_width=float(rng.uniform(0.12, 0.3)),
        hypo_lateral=bool(rng.uniform() < 0.6),
        wall=float(rng.uniform(3.5, 6.5)), septum=float(rng.uniform(4.0, 7.0)),
        thicken=float(rng.uniform(1.2, 1.6)),
        rv_start=float(rng.uniform(0.12, 0.3)), rv_width=float(rng.uniform(0.5, 0.75)),
        la_len=float(rng.uniform(0.3, 0.42)), la_wid=float(rng.uniform(1.0, 1.5)),
        annulus_offset=float(rng.uniform(-4.0, 3.0)), valve_db=float(rng.uniform(-16.0, -4.0)),
        ra_wid=float(rng.uniform(1.1, 1.4)),
        apex_x=float(56.0 + rng.uniform(-4.0, 6.0)), apex_y=float(rng.uniform(12.0, 20.0)),
        tilt=float(np.deg2rad(rng.uniform(2.0, 16.0))),
        cm_per_px=float(rng.uniform(0.13, 0.15)),
        sector_y0=float(rng.uniform(-3.0, 0.0)),
        sector_half=float(np.deg2rad(rng.uniform(36.0, 40.0))),
        sector_radius=float(rng.uniform(104.0, 112.0)),
        drop_lateral=_uniform(rng, look.dropout),
        drop_center=float(rng.uniform(0.3, 0.75)), drop_width=float(rng.uniform(0.2, 0.5)),
        drop_apex=float(rng.uniform(0.2, 0.9)), drop_septal=float(rng.uniform(0.0, 0.6)),
        drop_septal_center=float(rng.uniform(0.2, 0.8)),
        quality=q, psf_scale=1.0 + 0.5 * (1.0 - q), noise_db=poor(look.noise_db, 0.0),
        clutter_db=poor(look.clutter_db, 2.0), clutter_depth=float(rng.uniform(2.0, 10.0)),
        papillary=float(rng.uniform(2.0, 4.0) if rng.uniform() < 0.7 else 0.0),
        papillary_pos=float(rng.uniform(0.55, 0.75)),
        trab=_uniform(rng, look.trabeculae), rv_wall=float(rng.uniform(2.5, 4.0)),
        ias=float(rng.uniform(1.0, 2.0)), ias_drop=float(rng.uniform(-25.0, 0.0)),
        clutter_size=float(6.0 + 10.0 * (1.0 - q) + rng.uniform(0.0, 4.0)),
        bg_var=float(rng.uniform(3.0, 7.0)),
        myo_db=float(rng.uniform(-14.0, -8.0)), bg_db=float(rng.uniform(-30.0, -20.0)),
        peri_db=float(rng.uniform(-3.0, 1.0)), blood_db=poor(look.blood_db, 1.5),
        atten=float(rng.uniform(0.4, 1.2)), gain_db=_uniform(rng, look.gain_db),
        gain_drift_db=float(rng.uniform(0.0, 2.0)),
        dynamic_range_db=_uniform(rng, look.dynamic_range_db), gamma=_uniform(rng, look.gamma),
        speckle_rho=_uniform(rng, look.speckle_rho),
    )


# ---------------------------------------------------------------------------------------------
# Shape and cycle


def _fit_in_fan(h: Heart, margin: float = 2.5) -> Heart:
    """Move, straighten or shrink the heart until the LV cavity at ED, with a margin for
    probe jitter, lies inside the fan (the walls near the apex may leave it, as in real
    apical views)."""
    s = np.linspace(0.0, 1.0, 60)
    for _ in range(80):
        wl, wr = _half_widths(s, h.width_ed, h, width_ed=h.width_ed)
        u = np.concatenate([s * h.length_ed, s * h.length_ed])
        v = np.concatenate([-wl - margin, wr + margin])
        st, ct = math.sin(h.tilt), math.cos(h.tilt)
        x = h.apex_x + u * st + v * ct - 55.5
        y = h.apex_y + u * ct - v * st - h.sector_y0
        ang, r = np.arctan2(x, y), np.hypot(x, y)
        right, left = ang.max() > h.sector_half, ang.min() < -h.sector_half
        if r.max() > h.sector_radius - margin or (right and left):
            h = replace(h, length_ed=h.length_ed * 0.98, width_ed=h.width_ed * 0.98)
        elif right:
            h = replace(h, apex_x=h.apex_x - 0.5, tilt=max(0.0, h.tilt - np.deg2rad(0.5)))
        elif left:
            h = replace(h, apex_x=h.apex_x + 0.5)
        else:
            break
    return h


def _profile(s: np.ndarray, cap: float, cap_exp: float, taper: float) -> np.ndarray:
    """LV half-width profile g(s) in [0, 1] at fraction s of the long axis (0 apex, 1 base)."""
    x = np.clip(s / cap, 0.0, 1.0)
    g = (1.0 - (1.0 - x) ** 2) ** cap_exp
    tail = np.clip((s - cap) / (1.0 - cap), 0.0, 1.0)
    return g * (1.0 - taper * tail ** 2)


def _half_widths(s: np.ndarray, width: np.ndarray, h: Heart,
                 width_ed: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Septal (wl) and lateral (wr) half-widths (px) at fraction s of the long axis.

    ``width`` is the LV diameter scale of the frame (W); without a hypokinetic segment
    wl + wr = W * g(s). With ``width_ed`` (the ED scale) a hypokinetic segment keeps part of
    its ED width however much the rest of the wall contracts.
    """
    sc = np.clip(s, 0.0, 1.0)
    g = _profile(sc, h.cap, h.cap_exp, h.taper) * 0.5
    bend = (h.asym * np.sin(np.pi * sc) + h.wobble * np.sin(2.0 * np.pi * sc)
            + h.ripple * np.sin(3.0 * np.pi * sc))
    gl, gr = g * (1.0 - bend), g * (1.0 + bend)
    wl, wr = width * gl, width * gr
    if width_ed is not None and h.hypokinesis > 0:
        bump = h.hypokinesis * np.exp(-((sc - h.hypo_center) / h.hypo_width) ** 2)
        if h.hypo_lateral:
            wr = wr + (width_ed - width) * bump * gr
        else:
            wl = wl + (width_ed - width) * bump * gl
    return wl, wr


def _volume_px(length: float, width: float, h: Heart) -> float:
    """LV volume by the method of discs (circular discs of diameter wl + wr), px^3."""
    s = (np.arange(2000) + 0.5) / 2000
    wl, wr = _half_widths(s, width, h, width_ed=h.width_ed)
    return float(np.pi / 4.0 * np.mean((wl + wr) ** 2) * length)


def volume_ml(length_px: float, width_px: float, h: Heart) -> float:
    """LV volume by the method of discs, mL (pixel size ``h.cm_per_px``)."""
    return _volume_px(length_px, width_px, h) * h.cm_per_px ** 3


def _es_scale(h: Heart) -> tuple[float, float]:
    """(L_es/L_ed, W_es/W_ed) so that ESV/EDV = 1 - EF/100.

    The length takes the share ``alpha`` of the change; the width scale is solved by
    bisection (a hypokinetic segment makes the rest of the wall contract more).
    """
    r = 1.0 - h.ef / 100.0
    sl = r ** h.alpha
    edv = _volume_px(h.length_ed, h.width_ed, h)
    lo, hi = 0.05, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _volume_px(h.length_ed * sl, h.width_ed * mid, h) / edv < r:
            lo = mid
        else:
            hi = mid
    return sl, 0.5 * (lo + hi)


def _fill_fraction(h: Heart, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Volume fraction (1 at ED, 0 at ES) and cycle phase in [0, 1) at times t (frames)."""
    phase = np.mod((t - h.t_ed0) / h.period, 1.0)
    ts = h.systole
    sys = 0.5 * (1.0 + np.cos(np.pi * np.clip(phase / ts, 0.0, 1.0)))
    w = np.clip((phase - ts) / (1.0 - ts), 0.0, 1.0)
    # Rapid early filling, diastasis, atrial kick: a warped cosine reaching 1 at the next ED.
    warped = 0.8 * (1.0 - np.exp(-5.0 * w)) / (1.0 - np.exp(-5.0)) + 0.2 * w ** 6
    dia = 0.5 * (1.0 - np.cos(np.pi * np.clip(warped, 0.0, 1.0)))
    return np.where(phase < ts, sys, dia), phase


@dataclass
class _Frames:
    """Per-frame geometry, arrays of shape (T,)."""

    length: np.ndarray
    width: np.ndarray
    fill: np.ndarray
    phase: np.ndarray
    apex_x: np.ndarray
    apex_y: np.ndarray
    tilt: np.ndarray


def _frame_geometry(h: Heart, rng: np.random.Generator) -> _Frames:
    t = np.arange(h.n_frames, dtype=np.float64)
    fill, phase = _fill_fraction(h, t)
    sl, sw = _es_scale(h)
    length = h.length_ed * (sl + (1.0 - sl) * fill)
    width = h.width_ed * (sw + (1.0 - sw) * fill)
    # Probe jitter: mean-reverting random walks of the apex position and the tilt.
    def walk(step: float, keep: float = 0.9) -> np.ndarray:
        e = rng.normal(0.0, step, h.n_frames)
        out = np.empty(h.n_frames)
        acc = 0.0
        for i in range(h.n_frames):
            acc = keep * acc + e[i]
            out[i] = acc
        return out
    apex_x = h.apex_x + walk(0.25)
    apex_y = h.apex_y + walk(0.2) + 0.8 * (1.0 - fill)  # the apex dips slightly in systole
    tilt = h.tilt + np.deg2rad(walk(0.35))
    return _Frames(length, width, fill, phase, apex_x, apex_y, tilt)


def _local_coords(g: _Frames) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) of every pixel centre in every frame: float32 (T, 112, 112) each."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dx = xx[None] - g.apex_x[:, None, None].astype(np.float32)
    dy = yy[None] - g.apex_y[:, None, None].astype(np.float32)
    st = np.sin(g.tilt)[:, None, None].astype(np.float32)
    ct = np.cos(g.tilt)[:, None, None].astype(np.float32)
    u = dx * st + dy * ct          # axis direction (sin t, cos t): down, tilted to the right
    v = dx * ct - dy * st          # normal (cos t, -sin t): towards the lateral wall
    return u, v


def _to_image(g: _Frames, i: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local (u, v) of frame i to image (x, y)."""
    st, ct = np.sin(g.tilt[i]), np.cos(g.tilt[i])
    return g.apex_x[i] + u * st + v * ct, g.apex_y[i] + u * ct - v * st


def _to_image_all(g: _Frames, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local points p (T, 2) = (u, v), one per frame, to image (x, y) arrays (T,)."""
    st, ct = np.sin(g.tilt), np.cos(g.tilt)
    return g.apex_x + p[:, 0] * st + p[:, 1] * ct, g.apex_y + p[:, 0] * ct - p[:, 1] * st


# ---------------------------------------------------------------------------------------------
# Rendering


def _leaflets(hinge_l: np.ndarray, hinge_r: np.ndarray, opening: np.ndarray,
              frac_l: float, frac_r: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two valve leaflets hinged at (T, 2) points; opening 0 closed .. 1 open (towards apex)."""
    span = hinge_r - hinge_l
    n = np.linalg.norm(span, axis=1, keepdims=True) + 1e-9
    along = span / n
    angle = opening[:, None] * np.deg2rad(75.0)
    up = np.stack([-np.ones_like(opening), np.zeros_like(opening)], axis=1)  # towards apex
    down = -up * 0.15  # closed leaflets bow slightly into the atrium
    tip_l = hinge_l + n * frac_l * (np.cos(angle) * (along + down) + np.sin(angle) * up)
    tip_r = hinge_r + n * frac_r * (np.cos(angle) * (-along + down) + np.sin(angle) * up)
    return [(hinge_l, tip_l), (hinge_r, tip_r)]


def _sector(h: Heart) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Geometry of the fan (the probe at (55.5, sector_y0), beams spread over +-sector_half).

    Returns the fan mask bool (112, 112); the scan-conversion map float32 (112, 112, 2) giving
    each image pixel's (beam, sample) position on the polar grid; the inverse map float32
    (_NR, _NA, 2) giving each polar sample's (x, y) in the image; the sample depths (_NR,) px
    and the beam angles (_NA,) rad (0 = straight down, + = towards image right).
    """
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dx, dy = xx - 55.5, yy - h.sector_y0
    r = np.hypot(dx, dy)
    ang = np.arctan2(dx, dy)
    fan = (r <= h.sector_radius) & (np.abs(ang) <= h.sector_half) & (dy > 0)
    map_r = r / h.sector_radius * (_NR - 1)
    map_a = (ang + h.sector_half) / (2 * h.sector_half) * (_NA - 1)
    to_polar = np.stack([map_a, map_r], axis=-1).astype(np.float32)
    rp = np.linspace(0.0, h.sector_radius, _NR)
    ap = np.linspace(-h.sector_half, h.sector_half, _NA)
    px = 55.5 + rp[:, None] * np.sin(ap)[None]
    py = h.sector_y0 + rp[:, None] * np.cos(ap)[None]
    to_image = np.stack([px, py], axis=-1).astype(np.float32)
    return fan, to_polar, to_image, rp, ap


def _speckle(rng: np.random.Generator, n: int, look: Look, rho: float) -> np.ndarray:
    """Rayleigh speckle amplitude on the polar grid, float32 (n, _NR, _NA), mean 1.

    A complex Gaussian field blurred along (speckle_axial) and across (speckle_lateral) the
    beams; consecutive frames share a fraction ``rho`` of it (AR(1) in time).
    """
    noise = rng.standard_normal((n, 2, _NR, _NA), dtype=np.float32)
    out = np.empty((n, _NR, _NA), np.float32)
    state = None
    keep, fresh = np.float32(rho), np.float32(math.sqrt(1.0 - rho * rho))
    z = np.empty((2, _NR, _NA), np.float32)
    for i in range(n):
        for c in range(2):
            z[c] = cv2.GaussianBlur(noise[i, c], (0, 0), sigmaX=look.speckle_lateral,
                                    sigmaY=look.speckle_axial, borderType=cv2.BORDER_REFLECT)
        state = z.copy() if state is None else keep * state + fresh * z
        out[i] = np.hypot(state[0], state[1])
    out /= out.mean() + 1e-6
    return out


def _smooth_profile(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random smooth function on [0, 1] sampled at n points, values in [0, 1]."""
    s = np.linspace(0.0, 1.0, n)
    f = np.zeros(n)
    for k in (1.0, 2.0, 3.5, 6.0, 9.0):
        f += rng.uniform(0.3, 1.0) / k ** 0.7 * np.sin(2 * np.pi * (k * s + rng.uniform()))
    f -= f.min()
    return f / (f.max() + 1e-9)


_NTAB = 2048  # samples of the lookup tables over s in [0, 1]


def _table_index(s: np.ndarray) -> np.ndarray:
    """Nearest lookup-table index of s (clipped to [0, 1])."""
    x = s * np.float32(_NTAB - 1) + np.float32(0.5)
    np.clip(x, 0, _NTAB - 1, out=x)
    return x.astype(np.intp)


def _render(h: Heart, look: Look, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray, _Frames]:
    """Frames uint8 (T, 112, 112), GT masks uint8 (T, 112, 112) and the frame geometry.

    Builds an echogenicity (amplitude) map of the anatomy per frame, blurs it by the PSF,
    multiplies by speckle, applies depth attenuation, adds apex clutter and noise, then
    log-compresses with the video's dynamic range, gain and gamma.
    """
    g = _frame_geometry(h, rng)
    u, v = _local_coords(g)
    T = h.n_frames
    f32 = np.float32
    L = g.length[:, None, None].astype(f32)
    W = g.width[:, None, None].astype(f32)
    fill = g.fill[:, None, None].astype(f32)
    thick = (h.wall * (1.0 + (h.thicken - 1.0) * (1.0 - fill))).astype(f32)
    s_tab = np.linspace(0.0, 1.0, _NTAB)
    gl_tab, gr_tab = (t.astype(f32) for t in _half_widths(s_tab, np.ones(1), h))
    # Hypokinetic segment: the part of the ED width it keeps, per unit of (W_ed - W).
    hl_tab, hr_tab = (t.astype(f32) for t in _half_widths(s_tab, np.zeros(1), h, 1.0))
    dW = f32(h.width_ed) - W
    s = u / L
    idx = _table_index(s)
    wl, wr = W * gl_tab[idx] + dW * hl_tab[idx], W * gr_tab[idx] + dW * hr_tab[idx]
    in_len = (u >= 0) & (u <= L)
    d_sep = v + wl        # distance inside the septal boundary (positive inside)
    d_lat = wr - v        # distance inside the lateral boundary
    lv = in_len & (d_sep >= 0) & (d_lat >= 0)
    # LV myocardium: the same bullet grown by the wall thickness (apex included).
    # Its thickness varies along each wall (0.5x to 1.5x), so the epicardium does not give
    # the endocardium away.
    idx_o = _table_index((u + thick) / (L + thick))
    var_l = (0.5 + _smooth_profile(rng, _NTAB)).astype(f32)[idx_o]
    var_r = (0.5 + _smooth_profile(rng, _NTAB)).astype(f32)[idx_o]
    Lv = L + f32(h.annulus_offset)  # the base as the walls and valves show it
    lv_out = (u >= -thick) & (u <= Lv) \
        & (v >= -(W + 2 * thick * var_l) * gl_tab[idx_o] - dW * hl_tab[idx_o]) \
        & (v <= (W + 2 * thick * var_r) * gr_tab[idx_o] + dW * hr_tab[idx_o])
    # RV along the septum, from rv_start*L down to just above the mitral annulus.
    wl1, wr1 = W * gl_tab[-1] + dW * hl_tab[-1], W * gr_tab[-1] + dW * hr_tab[-1]
    rv0, rv1 = h.rv_start * L, L - 2.0
    srv = (u - rv0) / (rv1 - rv0)
    rv_w = h.rv_width * W * (0.85 + 0.15 * fill)
    prv = _profile(s_tab, 0.55, 0.6, 0.1).astype(f32)[_table_index(srv)] * rv_w
    sep = -wl - h.septum * (0.5 + 0.5 * var_l)
    rv = (srv >= 0) & (srv <= 1) & (v <= sep) & (v >= sep - prv)
    rv_out = (u >= rv0 - h.rv_wall) & (u <= rv1) & (v <= sep + 1) \
        & (v >= sep - prv - h.rv_wall)
    # Atria below the annuli (no wall across the annuli), filling in ventricular systole.
    grow = 1.0 + 0.12 * (1.0 - fill)
    v_ias = -wl1 - 0.5 * h.septum
    la_a = h.la_len * h.length_ed * grow
    la_b = 0.5 * h.width_ed * h.la_wid * grow
    la_e = ((u - Lv - 0.55 * la_a) / la_a) ** 2 + (v / la_b) ** 2
    la = (u >= L) & (la_e <= 1.0) & (v >= v_ias + h.ias)
    la_out = (u >= Lv - 1.0) & (la_e <= (1.0 + 2.5 / la_b) ** 2)
    prv1 = 0.9 * rv_w
    ra_a = 0.85 * la_a
    ra_b = 0.5 * prv1 * h.ra_wid * grow
    ra_v = -wl1 - h.septum - 0.5 * prv1
    ra_e = ((u - rv1 - 0.55 * ra_a) / ra_a) ** 2 + ((v - ra_v) / ra_b) ** 2
    ra = (u >= rv1) & (ra_e <= 1.0) & (v <= v_ias - h.ias)
    ra_out = (u >= rv1 - 1.0) & (ra_e <= (1.0 + 2.5 / ra_b) ** 2)
    cavity = lv | rv | la | ra
    heart = lv_out | rv_out | la_out | ra_out | cavity
    walls = heart & ~cavity

    # Echogenicity as amplitude (1 = white at neutral gain).
    def amp_of(db: float) -> f32:
        return f32(10.0 ** (db / 20.0))

    bgvar = cv2.GaussianBlur(rng.standard_normal((SIZE, SIZE)).astype(f32), (0, 0), 5.0)
    amp = np.empty((T, SIZE, SIZE), f32)
    amp[:] = np.power(10.0, (h.bg_db + bgvar / (bgvar.std() + 1e-6) * h.bg_var) / 20.0)[None]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    peri = np.stack([cv2.dilate(m, kernel) for m in heart.view(np.uint8)]).view(bool) & ~heart
    # Myocardium, weakened where the beam runs along the lateral wall and at the apex.
    keep_lat = 1.0 - h.drop_lateral * np.exp(-((s_tab - h.drop_center) / h.drop_width) ** 2)
    keep_sep = 1.0 - h.drop_septal * np.exp(-((s_tab - h.drop_septal_center) / 0.15) ** 2)
    keep = np.where(v > 0, keep_lat.astype(f32)[idx], keep_sep.astype(f32)[idx])
    near_apex = u < 20.0
    keep[near_apex] *= 1.0 - h.drop_apex * np.exp(-(np.maximum(u[near_apex], 0) / 7.0) ** 2)
    np.clip(keep, 0.03, 1.0, out=keep)
    amp[peri] = amp_of(h.peri_db) * keep[peri]
    amp[walls] = amp_of(h.myo_db) * keep[walls]
    amp[(np.abs(v - v_ias) < h.ias) & (u > L) & walls] *= amp_of(h.ias_drop)
    amp[cavity] = amp_of(h.blood_db)
    # Trabeculae and papillary muscle: tissue echoes inside the LV cavity (the cavity contour
    # runs outside them by convention), with a depth varying along the wall.
    tl = (h.trab * _smooth_profile(rng, _NTAB)).astype(f32)[idx]
    tr = (h.trab * _smooth_profile(rng, _NTAB)).astype(f32)[idx]
    trab = lv & ((d_sep < tl) | (d_lat < tr) | (u < 0.6 * h.trab * (1 + fill)))
    # Where present, trabeculae echo like the compact myocardium they grow from.
    present = (_smooth_profile(rng, _NTAB) > 0.35)[idx]
    trab &= present
    amp[trab] = amp_of(h.myo_db) * keep[trab]
    if h.papillary > 0:
        pu = h.papillary_pos * L
        pv = W * f32(gr_tab[int(round(h.papillary_pos * (_NTAB - 1)))]) - 0.5 * h.papillary
        pap = ((u - pu) / 1.6) ** 2 + (v - pv) ** 2 <= h.papillary ** 2
        amp[pap & lv] = amp_of(h.myo_db - 4.0)
    # Valves: mitral (LV/LA) and tricuspid (RV/RA) leaflets.
    opening = np.where(g.phase < h.systole, 0.0,
                       np.sin(np.pi * np.clip((g.phase - h.systole) / (1 - h.systole), 0, 1))
                       ** 0.4)
    lf = g.length
    dWf = h.width_ed - g.width
    wl1f = gl_tab[-1] * g.width + dWf * hl_tab[-1]
    wr1f = gr_tab[-1] * g.width + dWf * hr_tab[-1]
    lh = lf + h.annulus_offset
    mv = _leaflets(np.stack([lh, -wl1f], 1), np.stack([lh, wr1f], 1), opening, 0.5, 0.35)
    sep1 = -wl1f - h.septum
    rvw = h.rv_width * g.width * 0.9 * (0.85 + 0.15 * g.fill)
    tv = _leaflets(np.stack([lf - 2.0, sep1 - rvw], 1), np.stack([lf - 2.0, sep1], 1),
                   opening, 0.4, 0.4)
    valves = np.zeros((T, SIZE, SIZE), np.uint8)
    for a, b in mv + tv:
        xa, ya = _to_image_all(g, a)
        xb, yb = _to_image_all(g, b)
        for i in range(T):
            cv2.line(valves[i], (int(round(xa[i] * 16)), int(round(ya[i] * 16))),
                     (int(round(xb[i] * 16)), int(round(yb[i] * 16))), 1, 1, cv2.LINE_8, 4)
    amp[valves.view(bool)] = amp_of(h.myo_db + h.valve_db)

    # Image formation along the beams: sample the echogenicity on the polar grid (after a
    # small anti-alias blur), blur by the PSF (wide across the beams, so lateral resolution
    # worsens with depth), multiply by speckle, attenuate with depth, add apex clutter,
    # chest-wall reverberation and a noise floor rising with depth (TGC); log-compress; scan
    # convert back to the image.
    fan, to_polar, to_image, rp, ap = _sector(h)
    env = np.empty((T, _NR, _NA), f32)
    for i in range(T):
        a = cv2.GaussianBlur(amp[i], (0, 0), 0.6)
        a = cv2.remap(a, to_image[..., 0], to_image[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE)
        env[i] = cv2.GaussianBlur(a, (0, 0), sigmaX=look.psf_lateral * h.psf_scale,
                                  sigmaY=look.psf_axial * h.psf_scale,
                                  borderType=cv2.BORDER_REPLICATE)
    sp = _speckle(rng, T, look, h.speckle_rho)
    if look.speckle_contrast != 1.0:
        sp = np.power(sp, f32(look.speckle_contrast))
    env *= sp
    depth = rp[:, None]
    env *= np.exp(-h.atten * depth / h.sector_radius).astype(f32)[None]
    ax0, ay0 = h.apex_x - 55.5, h.apex_y - h.sector_y0
    r0 = math.hypot(ax0, ay0) + h.clutter_depth
    a0 = math.atan2(ax0, ay0)
    haze = np.exp(-((depth - r0) / h.clutter_size) ** 2 - ((ap[None] - a0) / 0.3) ** 2)
    haze = haze + 0.5 * np.exp(-(depth / 6.0) ** 2)
    level = 10 ** (h.clutter_db / 20.0) * (1.0 + 0.3 * np.sin(
        2 * np.pi * np.arange(T) / h.period + rng.uniform(0, 2 * np.pi)))
    clutter_sp = np.roll(sp[:, :, ::-1], T // 2, axis=0)  # decorrelated from the tissue speckle
    env += (level[:, None, None] * haze[None]).astype(f32) * clutter_sp
    noise_sp = np.roll(sp[:, ::-1], T // 3 + 1, axis=0)
    env += (10 ** (h.noise_db / 20.0) * (1.0 + depth / h.sector_radius)).astype(f32)[None] \
        * noise_sp
    gain = h.gain_db + h.gain_drift_db * np.sin(
        2 * np.pi * np.arange(T) / max(T, 1) + rng.uniform(0, 2 * np.pi))
    low = (-gain - h.dynamic_range_db)[:, None, None].astype(f32)
    np.maximum(env, f32(1e-7), out=env)
    x = np.log10(env, out=env)
    x *= f32(20.0 / h.dynamic_range_db)
    x -= low / f32(h.dynamic_range_db)      # 0 .. 1 spans the dynamic range
    img = np.empty((T, SIZE, SIZE), f32)
    for i in range(T):
        img[i] = cv2.remap(x[i], to_polar[..., 0], to_polar[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        if look.post_blur > 0:
            cv2.GaussianBlur(img[i], (0, 0), look.post_blur, dst=img[i])
    lut = np.rint(255.0 * np.linspace(0.0, 1.0, 1024) ** h.gamma).astype(np.uint8)
    img *= f32(1023.0)
    img += f32(0.5)
    np.clip(img, 0, 1023, out=img)
    frames = lut[img.astype(np.intp)]
    frames *= fan[None]
    return frames, lv.view(np.uint8).copy(), g


# ---------------------------------------------------------------------------------------------
# Ground truth: ED/ES frames and tracings


def extreme_frames(area: np.ndarray, period: float, t_ed0: float, systole: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """ED and ES frame numbers from the per-frame LV area (T,).

    For each cycle, ED is the frame of largest area within half a cycle of the modelled ED
    time and ES the smallest near the modelled ES time; an extreme is kept only if it is a
    local one strictly inside the video (its neighbours on both sides exist).
    """
    T = len(area)
    out = []
    for offset, pick in ((0.0, np.argmax), (systole, np.argmin)):
        frames = []
        k0 = math.floor((-period - t_ed0) / period)
        for k in range(k0, k0 + int(T / period) + 4):
            tc = t_ed0 + (k + offset) * period
            lo, hi = max(0, math.ceil(tc - period / 2)), min(T, math.floor(tc + period / 2) + 1)
            if hi - lo < 3 or not (1 <= round(tc) <= T - 2):
                continue
            f = lo + int(pick(area[lo:hi]))
            if 1 <= f <= T - 2:
                sign = 1 if pick is np.argmax else -1
                if sign * (area[f] - area[f - 1]) >= 0 and sign * (area[f] - area[f + 1]) >= 0:
                    frames.append(f)
        out.append(np.array(sorted(set(frames)), dtype=np.int64))
    return out[0], out[1]


def _tracing(h: Heart, g: _Frames, i: int, rng: np.random.Generator) -> np.ndarray:
    """EchoNet tracing of frame i: float (21, 4) rows X1, Y1, X2, Y2 in image pixels.

    Row 0 is the long axis (apex to the mid mitral annulus); rows 1..20 are chords
    perpendicular to it at fractions 1/20 .. 20/20 of the axis, endpoints on the septal (X1, Y1)
    and lateral (X2, Y2) walls. The annotator's view of the LV differs slightly from the truth
    (apex, base, width, wall offset) and each point carries a little hand jitter.
    """
    L = g.length[i] + rng.normal(0.0, 1.2)
    apex_shift = rng.normal(0.0, 1.0)
    scale = 1.0 + rng.normal(0.0, 0.03)
    s = (np.arange(N_CHORDS) + 1.0) / N_CHORDS
    wl, wr = _half_widths(s, np.full(N_CHORDS, g.width[i]), h, width_ed=h.width_ed)
    u = apex_shift + s * (L - apex_shift)
    # Each annotator follows a slightly different edge on each wall, plus hand jitter.
    wl = wl * scale + rng.normal(0.0, 0.6) + rng.normal(0.0, 0.35, N_CHORDS)
    wr = wr * scale + rng.normal(0.0, 0.6) + rng.normal(0.0, 0.35, N_CHORDS)
    u1 = u + rng.normal(0.0, 0.2, N_CHORDS)
    u2 = u + rng.normal(0.0, 0.2, N_CHORDS)
    x1, y1 = _to_image(g, i, u1, -np.maximum(wl, 0.0))
    x2, y2 = _to_image(g, i, u2, np.maximum(wr, 0.0))
    ax1, ay1 = _to_image(g, i, np.array([apex_shift]), np.zeros(1))
    ax2, ay2 = _to_image(g, i, np.array([L]), np.zeros(1))
    axis = np.array([[ax1[0], ay1[0], ax2[0], ay2[0]]])
    return np.concatenate([axis, np.stack([x1, y1, x2, y2], 1)], 0)


# ---------------------------------------------------------------------------------------------
# Set writer


def _video_seed(seed: int, split: str, i: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), i))


def _choose_fps(rng: np.random.Generator, style: str) -> int:
    if style == "synthetic":
        return 50
    return int(rng.choice([50, 30, 54], p=[0.84, 0.06, 0.10]))


def _file_name(rng: np.random.Generator, style: str, number: int) -> str:
    if style == "synthetic":
        return f"sample_{number:06d}"
    return "0X" + rng.bytes(8).hex().upper()


def write_avi(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """Write uint8 (T, 112, 112) grey frames as an MJPG AVI with 3 identical channels.

    Uses OpenCV's built-in MJPEG encoder (deterministic, no FFmpeg needed), quality 95.
    """
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"),
                             float(fps), (frames.shape[2], frames.shape[1]), True)
    if not writer.isOpened():
        raise OSError(f"cannot open an MJPG video writer for {path!r}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()


def make_video(style: str, seed: int, split: str, i: int, n_frames: int, number: int = 0
               ) -> dict:
    """Generate one video in memory.

    Returns a dict with FileName, FPS, EF, EDV, ESV (mL), frames uint8 (T, 112, 112), masks
    uint8 (T, 112, 112) 0/1, ed / es int64 arrays, and for the real style ``tracings``: a list
    of (frame, float (21, 4) X1 Y1 X2 Y2) for one ED and one ES frame.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if n_frames < 16:
        raise ValueError(f"n_frames must be >= 16 to hold a cardiac cycle, got {n_frames}")
    rng = np.random.default_rng(_video_seed(seed, split, i))
    name = _file_name(rng, style, number)
    fps = _choose_fps(rng, style)
    h = _fit_in_fan(_sample_heart(rng, style, fps, n_frames))
    frames, masks, g = _render(h, LOOKS[style], rng)
    area = masks.reshape(n_frames, -1).sum(1).astype(np.float64)
    ed, es = extreme_frames(area, h.period, h.t_ed0, h.systole)
    sl, sw = _es_scale(h)
    edv = round(volume_ml(h.length_ed, h.width_ed, h), 3)
    esv = round(volume_ml(h.length_ed * sl, h.width_ed * sw, h), 3)
    out = dict(FileName=name, FPS=fps, EF=round(100.0 * (edv - esv) / edv, 4), EDV=edv, ESV=esv,
               frames=frames, masks=masks, ed=ed, es=es, heart=h)
    if style == "synthetic":
        out.update(EF=h.ef, EDV=0.0, ESV=0.0)
    else:
        # A consecutive ED/ES pair (either order), as EchoNet's annotators traced.
        pairs = [(a, b) for a in ed for b in es if 0 < abs(int(b) - int(a)) < h.period]
        if not pairs:
            raise RuntimeError(f"video {name}: no ED/ES pair inside {n_frames} frames "
                               f"(ed={ed.tolist()}, es={es.tolist()})")
        f_ed, f_es = pairs[int(rng.integers(len(pairs)))]
        out["tracings"] = [(int(f), _tracing(h, g, int(f), rng)) for f in sorted((f_ed, f_es))]
    return out


def generate_set(out_dir: str | os.PathLike, *, style: str, seed: int, n_train: int, n_val: int,
                 n_test: int, n_frames: int, n_extra: int = 0,
                 progress: bool = True) -> pd.DataFrame:
    """Write a phantom set in the EchoNet layout (see the module docstring); return its FileList.

    The set is built under ``<out_dir>.partial`` and renamed into place when complete.
    Output is byte-identical for the same arguments.
    """
    from tqdm import tqdm

    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    counts = {"TRAIN": n_train, "VAL": n_val, "TEST": n_test, "EXTRA": n_extra}
    for k, n in counts.items():
        if n < 0:
            raise ValueError(f"number of {k} videos must be >= 0, got {n}")
    if style == "real" and n_extra:
        raise ValueError("the real style (EchoNet-Dynamic) has no EXTRA split, "
                         f"got n_extra={n_extra}")
    out_dir = Path(out_dir)
    stage = partial_path(out_dir)
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "Videos").mkdir(parents=True)
    (stage / "GroundTruth").mkdir()
    rows, traces = [], []
    jobs = [(split, i) for split in SPLITS for i in range(counts[split])]
    for number, (split, i) in enumerate(tqdm(jobs, desc=f"phantom {style}", disable=not progress)):
        vid = make_video(style, seed, split, i, n_frames, number)
        name = vid["FileName"]
        write_avi(stage / "Videos" / f"{name}.avi", vid["frames"], vid["FPS"])
        with open(stage / "GroundTruth" / f"{name}.npz", "wb") as fh:
            np.savez_compressed(fh, masks=vid["masks"], ed=vid["ed"], es=vid["es"])
        rows.append(dict(FileName=name, EF=vid["EF"], ESV=vid["ESV"], EDV=vid["EDV"],
                         FrameHeight=SIZE, FrameWidth=SIZE, FPS=vid["FPS"],
                         NumberOfFrames=n_frames, Split=split))
        for frame, tr in vid.get("tracings", []):
            for x1, y1, x2, y2 in tr:
                traces.append((f"{name}.avi", x1, y1, x2, y2, frame))
    filelist = pd.DataFrame(rows, columns=FILELIST_COLUMNS)
    if filelist["FileName"].duplicated().any():
        dup = filelist.loc[filelist["FileName"].duplicated(), "FileName"].tolist()
        raise RuntimeError(f"duplicate FileNames {dup} (seed {seed})")
    if style == "synthetic":
        filelist["EF"] = filelist["EF"].astype(np.int64)
        filelist[["ESV", "EDV"]] = 0
    else:
        filelist = filelist.sort_values("FileName", kind="stable").reset_index(drop=True)
        tr = pd.DataFrame(traces, columns=TRACING_COLUMNS)
        tr.to_csv(stage / "VolumeTracings.csv", index=False, float_format="%.4f")
    filelist.to_csv(stage / "FileList.csv", index=False)
    meta = dict(format_version=FORMAT_VERSION, style=style, seed=seed, n_frames=n_frames,
                counts=counts, look=asdict(LOOKS[style]))
    (stage / "GroundTruth" / "phantom.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    commit(stage, out_dir)
    return filelist


# ---------------------------------------------------------------------------------------------
# Reading back (for previews and tests)


def tracing_polygon(rows: np.ndarray) -> np.ndarray:
    """EchoNet polygon of a traced frame: float (40, 2) x, y from rows (21, 4) X1 Y1 X2 Y2."""
    rows = np.asarray(rows, dtype=np.float64)
    x = np.concatenate([rows[1:, 0], rows[1:, 2][::-1]])
    y = np.concatenate([rows[1:, 1], rows[1:, 3][::-1]])
    return np.stack([x, y], 1)


def render_preview(set_dir: str | os.PathLike, out_png: str | os.PathLike, n_videos: int = 4,
                   n_frames: int = 4) -> None:
    """PNG montage: ``n_videos`` rows (first TRAIN/TEST videos) of ``n_frames`` frames each,
    ED and ES first, with the ground-truth LV contour (green) and, for traced frames, the
    tracing polygon (red)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    set_dir = Path(set_dir)
    filelist = pd.read_csv(set_dir / "FileList.csv")
    meta_path = set_dir / "GroundTruth" / "phantom.json"
    style = json.loads(meta_path.read_text())["style"] if meta_path.exists() else "?"
    tracings = None
    if (set_dir / "VolumeTracings.csv").exists():
        tracings = pd.read_csv(set_dir / "VolumeTracings.csv")
    names = filelist["FileName"].astype(str).tolist()[:n_videos]
    fig = Figure(figsize=(1.9 * n_frames, 2.0 * max(1, len(names)) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for r, name in enumerate(names):
        frames = read_video(set_dir / "Videos" / f"{name}.avi")
        gt = np.load(set_dir / "GroundTruth" / f"{name}.npz")
        masks, ed, es = gt["masks"], gt["ed"], gt["es"]
        picks = [(int(f), "ED") for f in ed[:1]] + [(int(f), "ES") for f in es[:1]]
        for f in np.linspace(0, len(frames) - 1, n_frames + 2)[1:-1].round().astype(int):
            if int(f) not in [p[0] for p in picks]:
                picks.append((int(f), ""))
        for c, (f, tag) in enumerate(picks[:n_frames]):
            ax = fig.add_subplot(len(names), n_frames, r * n_frames + c + 1)
            ax.imshow(frames[f], cmap="gray", vmin=0, vmax=255)
            ax.contour(masks[f], levels=[0.5], colors="lime", linewidths=0.7)
            if tracings is not None:
                t = tracings[(tracings["FileName"] == f"{name}.avi") & (tracings["Frame"] == f)]
                if len(t):
                    p = tracing_polygon(t[["X1", "Y1", "X2", "Y2"]].to_numpy())
                    p = np.vstack([p, p[:1]])
                    ax.plot(p[:, 0], p[:, 1], color="red", linewidth=0.6)
            ax.set_title(f"{name} f{f} {tag}", fontsize=5)
            ax.set_axis_off()
    legend = "GT contour (green), tracing (red)" if tracings is not None else "GT contour (green)"
    fig.suptitle(f"phantom, style={style}: {legend}", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out_png)
