"""The phantom's renderer: a :class:`~echodfkd.data.phantom.heart.Heart` to echo frames.

Per-frame geometry (cycle, probe jitter), the fan (sector) and its scan conversion, Rayleigh
speckle on the polar grid, and :func:`_render`, which builds the anatomy's echogenicity, forms
the image along the beams and returns the frames with the exact LV ground-truth masks. What
makes the LV boundary ambiguous (trabeculae, varying wall thickness, dropout, clutter, haze,
depth-dependent lateral resolution, off-plane leaflets) lives here (docs/design.md §5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from echodfkd.data.phantom.heart import (Heart, Look, _es_scale, _fill_fraction, _half_widths,
                                         _profile)

SIZE = 112

# Polar speckle grid: samples along each beam and number of beams across the fan.
_NR, _NA = 128, 96


# ---------------------------------------------------------------------------------------------
# Frame geometry


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
    wl1 = W * gl_tab[-1] + dW * hl_tab[-1]
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
