import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from echodfkd.evaluation import metrics as M


# ---------------------------------------------------------------- binarize / dice / area

def test_binarize_uint8_and_float():
    u = np.array([0, 127, 128, 255], dtype=np.uint8)
    assert M.binarize(u, 0.5).tolist() == [False, False, True, True]
    f = np.array([0.0, 0.5, 0.51, 1.0])
    assert M.binarize(f, 0.5).tolist() == [False, False, True, True]
    b = np.array([True, False])
    assert M.binarize(b, 0.5) is b


def test_binarize_rejects_bad_threshold_and_dtype():
    with pytest.raises(ValueError, match="1.5"):
        M.binarize(np.zeros(3), 1.5)
    with pytest.raises(TypeError, match="int64"):
        M.binarize(np.zeros(3, dtype=np.int64), 0.5)


def test_dice_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :4] = True          # 4 pixels
    b[0, 2:4] = True         # 2 pixels, both inside a
    assert M.dice(a, b) == pytest.approx(2 * 2 / (4 + 2))
    assert M.dice(a, ~a) == 0.0
    assert M.dice(a, a) == 1.0


def test_dice_empty_vs_empty_is_one_and_empty_vs_full_is_zero():
    z = np.zeros((3, 3), bool)
    assert M.dice(z, z) == 1.0
    assert M.dice(z, ~z) == 0.0


def test_dice_rejects_soft_masks_and_shape_mismatch():
    with pytest.raises(ValueError, match="binary"):
        M.dice(np.full((2, 2), 200, np.uint8), np.ones((2, 2), np.uint8))
    with pytest.raises(ValueError, match="shapes differ"):
        M.dice(np.ones((2, 2), bool), np.ones((2, 3), bool))


def test_dice_per_frame_and_area_curve():
    a = np.zeros((3, 2, 2), bool)
    b = np.zeros((3, 2, 2), bool)
    a[0] = True                       # frame 0: 4 vs 0 -> 0
    a[1, 0, 0] = b[1, 0, 0] = True    # frame 1: identical -> 1
    b[1, 1, 1] = True                 # ... 1 vs 2 with 1 shared -> 2/3
    # frame 2 empty vs empty -> 1
    np.testing.assert_allclose(M.dice_per_frame(a, b), [0.0, 2 / 3, 1.0])
    assert M.area_curve(a).tolist() == [4, 1, 0]
    assert M.area_curve(a).dtype == np.int64


mask_pairs = st.integers(1, 6).flatmap(lambda n: st.tuples(
    arrays(bool, (n, 5)), arrays(bool, (n, 5))))


@settings(max_examples=60, deadline=None)
@given(mask_pairs)
def test_dice_properties(pair):
    a, b = pair
    d = M.dice(a, b)
    assert 0.0 <= d <= 1.0
    assert d == M.dice(b, a)
    if a.any():
        assert M.dice(a, a) == 1.0


# ---------------------------------------------------------------- phase frames / aFD

def test_find_phase_frame_by_hand():
    # two dips below the median: run [2..4] (min at 3) and run [8..9] (min at 9)
    a = np.array([9, 8, 3, 1, 4, 8, 9, 8, 2, 0], float)
    assert M.find_phase_frame(a, 3, "ES") == 3
    assert M.find_phase_frame(a, 5, "ES") == 3     # 1 from run [2..4], 3 from run [8..9]
    assert M.find_phase_frame(a, 7, "ES") == 9     # 1 from run [8..9]
    assert M.afd(a, 7, "ES") == 2
    # ED on -a: runs above the median are [0..1] and [5..7]; argmax 0 and 6
    assert M.find_phase_frame(a, 1, "ED") == 0
    assert M.find_phase_frame(a, 5, "ED") == 6
    assert M.afd(a, 5, "ED") == 1


def test_find_phase_frame_tie_between_runs_takes_earlier():
    a = np.array([0, 5, 5, 5, 1], float)   # runs [0] and [4], reference 2 is 2 from each
    assert M.find_phase_frame(a, 2, "ES") == 0


def test_find_phase_frame_constant_curve_does_not_return_reference():
    a = np.zeros(10)
    assert M.find_phase_frame(a, 7, "ES") == 0
    assert M.afd(a, 7, "ED") == 7


def test_find_phase_frame_errors():
    with pytest.raises(ValueError, match="outside"):
        M.find_phase_frame(np.arange(5.0), 5, "ES")
    with pytest.raises(ValueError, match="phase"):
        M.find_phase_frame(np.arange(5.0), 1, "XX")
    with pytest.raises(ValueError, match="NaN"):
        M.find_phase_frame(np.array([1.0, np.nan]), 0, "ES")


curves = arrays(np.float64, st.integers(1, 40), elements=st.integers(0, 50).map(float))


@settings(max_examples=100, deadline=None)
@given(curves)
def test_afd_zero_at_the_extremes(a):
    assert M.afd(a, int(np.argmin(a)), "ES") == 0
    assert M.afd(a, int(np.argmax(a)), "ED") == 0


@settings(max_examples=100, deadline=None)
@given(curves, st.data())
def test_found_frame_is_in_range_and_below_median(a, data):
    ref = data.draw(st.integers(0, a.size - 1))
    f = M.find_phase_frame(a, ref, "ES")
    assert 0 <= f < a.size
    period = M.cycle_length(a)
    lo, hi = (0, a.size) if period is None else (max(0, ref - period), ref + period + 1)
    searched = a[lo:hi]
    assert lo <= f < lo + searched.size          # within a cycle of the reference
    if searched.min() < np.median(searched):
        assert a[f] < np.median(searched)


# A 3-beat curve (cycle 50 frames): ED at 0, 50, 100, ES at 25, 75, 125.
T3 = np.arange(150)
BEATS = 1000 + 300 * np.cos(2 * np.pi * T3 / 50)


@pytest.mark.parametrize("name, curve", [
    ("clean", BEATS),
    ("area doubling over the video", BEATS * (1 + T3 / 150)),
    ("linear drift", BEATS + 8 * T3),
    ("fading to a third", BEATS * np.exp(-T3 / 120)),
    ("noisy and drifting", BEATS * (1 + T3 / 150)
     + np.random.default_rng(0).normal(0, 60, T3.size)),
])
def test_three_beats_score_the_traced_beat(name, curve):
    """The beat scored is the one around the traced frame: the found frame is within 3 frames
    of that beat's extreme, whichever beat is traced and however the area drifts (a search
    over the whole curve picks the wrong beat on the drifting ones)."""
    assert abs(M.cycle_length(curve) - 50) <= 3    # a window width: a few frames off is fine
    for ref, truth in [(20, 25), (75, 75), (130, 125)]:
        assert abs(M.find_phase_frame(curve, ref, "ES") - truth) <= 3, (name, ref)
    for ref, truth in [(3, 0), (48, 50), (105, 100)]:
        assert abs(M.find_phase_frame(curve, ref, "ED") - truth) <= 3, (name, ref)


def test_cycle_length_needs_two_cycles():
    assert M.cycle_length(BEATS[:60]) is None            # 1.2 cycles: searched whole
    assert M.cycle_length(np.full(100, 7.0)) is None     # flat
    assert M.cycle_length(np.arange(100.0)) is None      # a ramp: detrended to nothing
    assert M.cycle_length(BEATS[:100]) in (49, 50, 51)


# ---------------------------------------------------------------- EF, correlations

def test_ef_from_areas():
    assert M.ef_from_areas(100, 40) == pytest.approx(60.0)
    np.testing.assert_allclose(M.ef_from_areas([200, 0], [50, 0]), [75.0, np.nan])


def test_ef_from_volumes():
    assert M.ef_from_volumes(120.0, 48.0) == pytest.approx(60.0)
    np.testing.assert_allclose(M.ef_from_volumes([100, 0], [100, 5]), [0.0, np.nan])


# ---------------------------------------------------------------- area-length volumes

YY, XX = np.mgrid[:112, :112].astype(float)


def ellipse(a: float, b: float, degrees: float = 0.0, cy: float = 56.3, cx: float = 55.7):
    """Pixels whose centre lies in the ellipse of semi-axes a (long, along the rows when
    degrees = 0) and b, rotated by ``degrees``."""
    t = np.deg2rad(degrees)
    u = (YY - cy) * np.cos(t) + (XX - cx) * np.sin(t)
    v = -(YY - cy) * np.sin(t) + (XX - cx) * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def test_area_length_volume_formula():
    # prolate ellipsoid of revolution a=30, b=15: A = pi a b, L = 2a -> V = 4/3 pi a b^2
    a, b = 30.0, 15.0
    sphere_like = 4 / 3 * math.pi * a * b * b
    assert M.area_length_volume(math.pi * a * b, 2 * a) == pytest.approx(sphere_like)
    assert M.area_length_volume(3 * math.pi, 8.0) == pytest.approx(8 * 9 * math.pi / 24)  # 3 pi
    assert M.area_length_volume(0, 0) == 0.0
    np.testing.assert_allclose(M.area_length_volume([0, 4], [0, 2]), [0, 64 / (3 * math.pi)])


def test_rectangle_geometry_is_exact():
    m = np.zeros((112, 112), bool)
    m[20:70, 40:60] = True                      # 50 rows x 20 columns
    area, length, volume = M.lv_geometry(m)
    assert area == 1000 and length == pytest.approx(50.0)
    assert volume == pytest.approx(8 * 1000 ** 2 / (3 * math.pi * 50))      # 8 h w^2 / (3 pi)
    assert M.long_axis(m.T) == pytest.approx(50.0)                         # lying rectangle


@pytest.mark.parametrize("degrees", [0.0, 30.0, 65.0, 90.0])
def test_ellipse_volume_within_one_percent(degrees):
    a, b = 30.0, 15.0
    area, length, volume = M.lv_geometry(ellipse(a, b, degrees))
    assert area == pytest.approx(math.pi * a * b, rel=0.01)     # 1413.7 px
    assert length == pytest.approx(2 * a, abs=1.0)              # 60 px, whatever the tilt
    assert volume == pytest.approx(4 / 3 * math.pi * a * b * b, rel=0.01)   # 28274 px^3


def test_bullet_long_axis_is_apex_to_mid_annulus():
    # apex pixel at row 20 (a half-ellipse cap of height 15, half-width 8, centred on column
    # 56) on a 17-px-wide body (columns 48..64) down to the flat annulus at row 69
    m = ellipse(15, 8, cy=35.0, cx=56.0) & (YY <= 35)
    m[35:70, 48:65] = True
    assert m[20, 56] and not m[19].any() and m[69].sum() == 17
    assert M.long_axis(m) == pytest.approx(69 - 20 + 1)               # 50 px, apex to base
    # the farthest pair of pixels (max Feret) runs from the apex to a basal corner:
    # sqrt(49^2 + 8^2) + 1 = 50.65 px, 1.3% too long
    pts = np.argwhere(m).astype(float)
    feret = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max() + 1
    assert feret == pytest.approx(math.hypot(49, 8) + 1)


def test_lv_geometry_measures_the_largest_component():
    m = ellipse(30, 15)
    speck = m.copy()
    speck[0:3, 0:3] = True                       # a stray island far from the LV
    assert M.lv_geometry(speck) == M.lv_geometry(m)
    assert M.lv_geometry(np.zeros((112, 112), bool)) == (0, 0.0, 0.0)
    one = np.zeros((5, 5), bool)
    one[2, 2] = True
    assert M.lv_geometry(one) == (1, 1.0, pytest.approx(8 / (3 * math.pi)))


def test_volume_ef_of_scaled_ellipses():
    # ES = ED shrunk by 0.8 in both axes: volumes scale by 0.8^3, EF = 100 (1 - 0.512) = 48.8
    edv = M.lv_geometry(ellipse(30, 15))[2]
    esv = M.lv_geometry(ellipse(24, 12))[2]
    assert M.ef_from_volumes(edv, esv) == pytest.approx(48.8, abs=1.0)
    # the naive area EF of the same pair is 100 (1 - 0.64) = 36
    assert M.ef_from_areas(ellipse(30, 15).sum(), ellipse(24, 12).sum()) == pytest.approx(36, abs=1)


def test_pearson_mae_spearman_by_hand():
    x = [1, 2, 3, 4]
    assert M.pearson_r(x, [2, 4, 6, 8]) == pytest.approx(1.0)
    assert M.pearson_r(x, [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(M.pearson_r(x, [1, 1, 1, 1]))
    assert M.mae([1, 2, np.nan], [2, 4, 0]) == pytest.approx(1.5)
    # monotone but non-linear: rho 1, r < 1
    assert M.spearman_rho(x, [1, 10, 100, 1000]) == pytest.approx(1.0)
    assert M.pearson_r(x, [1, 10, 100, 1000]) < 0.99


def test_rankdata_ties_and_spearman_with_ties():
    np.testing.assert_allclose(M.rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
    # ranks x: 1, 2.5, 2.5, 4 ; y: 1, 2, 3, 4 -> r of ranks
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert M.spearman_rho([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(expected)


def test_teacher_agreement_is_mean_per_frame_dice():
    s = np.zeros((2, 2, 2), np.uint8)
    t = np.zeros((2, 2, 2), np.uint8)
    s[0] = 255                # frame 0: 4 px vs teacher 2 px shared -> 2*2/6
    t[0, 0] = 200
    # frame 1: both empty -> 1
    assert M.teacher_agreement(s, t, 0.5) == pytest.approx((4 / 6 + 1) / 2)
    with pytest.raises(ValueError, match="shape"):
        M.teacher_agreement(s, t[:1], 0.5)


# ---------------------------------------------------------------- Pareto front

def test_pareto_front_by_hand():
    cost = [1, 2, 3, 4, 2]
    score = [0.5, 0.7, 0.6, 0.9, 0.7]
    # index 2 is dominated by index 1 (cheaper, better); 1 and 4 are duplicates -> both optimal
    assert M.pareto_front(cost, score).tolist() == [True, True, False, True, True]


def test_pareto_front_nan_and_two_costs():
    assert M.pareto_front([1, 2], [np.nan, 0.1]).tolist() == [False, True]
    cost = np.array([[1, 10], [2, 1], [3, 20]])
    assert M.pareto_front(cost, [0.5, 0.5, 0.6]).tolist() == [True, True, True]
    assert M.pareto_front(cost, [0.5, 0.5, 0.4]).tolist() == [True, True, False]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 20)), min_size=1, max_size=25))
def test_pareto_front_invariants(points):
    cost = np.array([p[0] for p in points], float)
    score = np.array([p[1] for p in points], float)
    front = M.pareto_front(cost, score)
    assert front.any()
    # the best score at the lowest cost among the best scores is always optimal
    best = np.flatnonzero(score == score.max())
    assert front[best[np.argmin(cost[best])]]
    # no front point dominates another front point
    for i in np.flatnonzero(front):
        for j in np.flatnonzero(front):
            assert not (cost[j] <= cost[i] and score[j] >= score[i]
                        and (cost[j] < cost[i] or score[j] > score[i]))
    # every non-front point is dominated by some front point
    for i in np.flatnonzero(~front):
        assert any(cost[j] <= cost[i] and score[j] >= score[i] for j in np.flatnonzero(front))
    # along the front sorted by cost, score strictly increases (ties in cost share a score)
    order = np.lexsort((score[front], cost[front]))
    c, s = cost[front][order], score[front][order]
    assert all((c[k + 1] == c[k] and s[k + 1] == s[k]) or s[k + 1] > s[k]
               for k in range(len(c) - 1))
