"""The phantom's heart model: per-video anatomy, cardiac cycle and acquisition parameters.

Holds the two styles' looks (:class:`Look`, ``LOOKS``), the per-video :class:`Heart` and its
sampling (EF, frame rate, anatomy, image quality), the LV shape (half-width profile in the
apex-based (u, v) frame, see the package docstring), LV volumes by the method of discs with the
ES scale that makes ESV/EDV exactly 1 - EF/100, the cardiac cycle (volume fraction over time)
and the ED/ES frames found from the per-frame LV area (docs/design.md §5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

STYLES = ("real", "synthetic")


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


def _choose_fps(rng: np.random.Generator, style: str) -> int:
    """Frame rate of a video, frames/s: 50 (synthetic); EchoNet-Dynamic's mix (real)."""
    if style == "synthetic":
        return 50
    return int(rng.choice([50, 30, 54], p=[0.84, 0.06, 0.10]))


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


# ---------------------------------------------------------------------------------------------
# Ground truth: ED/ES frames


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
