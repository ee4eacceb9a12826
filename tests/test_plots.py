import numpy as np
import pandas as pd

from echodfkd.evaluation import plots
from echodfkd.evaluation.evaluate import AreaPanel, OverlayPanel

PNG = b"\x89PNG"


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:4] == PNG and len(data) > 1000


def curve(n=30, phase=0):
    return (500 + 200 * np.cos(2 * np.pi * (np.arange(n) - phase) / 15)).astype(np.int64)


def test_area_curves_png(tmp_path):
    panels = [AreaPanel("v1", curve(), curve(phase=1), {"ED": 15, "ES": 22},
                        {"ED": 15, "ES": 22}, {"ED": 16, "ES": 23}),
              AreaPanel("v2", curve(40), None, {"ED": 0, "ES": 7}, {"ED": 0, "ES": 7})]
    out = plots.plot_area_curves(tmp_path / "sub" / "curves.png", panels)
    assert is_png(out)
    assert not list(tmp_path.glob("sub/*.tmp.png"))      # the temporary file was renamed
    assert is_png(plots.plot_area_curves(tmp_path / "empty.png", []))


def test_overlays_png(tmp_path):
    yy, xx = np.mgrid[:112, :112]
    m = (yy - 56) ** 2 + (xx - 56) ** 2 < 400
    img = (m * 120 + 20).astype(np.uint8)
    panels = [OverlayPanel("a ED", img, m, np.roll(m, 3, axis=1), m),
              OverlayPanel("a ES", img, m, np.zeros_like(m), None)]   # empty student contour
    assert is_png(plots.plot_overlays(tmp_path / "ov.png", panels))


def grid_table():
    return pd.DataFrame({
        "name": ["s1", "s2", "s3", "s4"], "weights": [1e3, 1e4, 1e5, 1e6],
        "flops": [1e6, 1e8, 1e7, 1e9], "dice": [0.7, 0.8, 0.78, 0.9],
        "dice_teacher_ref": [0.72, 0.83, 0.8, 0.93], "agreement": [0.7, 0.85, 0.8, 0.95],
        "afd_ed": [3.0, 2.0, 2.5, 1.0], "afd_ed_teacher": [2.5, 2.0, 2.2, 0.5],
        "pareto_weights": [True, True, False, True], "pareto_flops": [True, False, True, True]})


def test_pareto_png(tmp_path):
    teacher = {"name": "teacher", "weights": 4e7, "flops": 8e9, "dice": 0.92}
    assert is_png(plots.plot_pareto(tmp_path / "p.png", grid_table(), teacher=teacher))
    # flags absent: computed on the fly; no teacher
    df = grid_table().drop(columns=["pareto_weights", "pareto_flops"])
    assert is_png(plots.plot_pareto(tmp_path / "p2.png", df))


def test_reference_agreement_png(tmp_path):
    pairs = [("dice", "dice_teacher_ref"), ("dice", "agreement"), ("afd_ed", "afd_ed_teacher"),
             ("afd_es", "afd_es_teacher")]                # the last pair is absent: skipped
    assert is_png(plots.plot_reference_agreement(tmp_path / "a.png", grid_table(), pairs))
    assert is_png(plots.plot_reference_agreement(tmp_path / "b.png", grid_table(), []))


def test_pareto_png_teacher_without_cost(tmp_path):
    # a teacher given as outputs only: its Dice is known, its weights and FLOPs are not
    teacher = {"name": "teacher", "dice": 0.92}
    assert is_png(plots.plot_pareto(tmp_path / "p.png", grid_table(), teacher=teacher))


def test_reference_agreement_png_without_teacher_scores(tmp_path):
    df = grid_table().drop(columns=["dice_teacher_ref", "afd_ed_teacher"])
    df["agreement"] = np.nan                        # present but empty: skipped too
    pairs = [("dice", "dice_teacher_ref"), ("dice", "agreement"), ("afd_ed", "afd_ed_teacher")]
    assert is_png(plots.plot_reference_agreement(tmp_path / "a.png", df, pairs))
