"""The report pages in a real browser: headless Debian Chromium driven by playwright, pages
opened from the file system (file:// URLs), as a user opens them.

The test videos are written by the pipeline's own renderer and encoder
(:func:`echodfkd.evaluation.video.write_video`: MP4/H.264 through PyAV, or the WebP fallback
where no H.264 encoder is installed), so the browser plays exactly what users get.

Set ECHODFKD_SCREENSHOT=path.png to save a screenshot of the student page.
"""

import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from echodfkd.evaluation import html as H
from echodfkd.evaluation import video as V

pytestmark = pytest.mark.slow

EVIL = "<script>window.__pwned=1</script>"
NAMES = ["0XAAAA", EVIL, "0XNOVIDEO"]
INSTALL = "install Debian chromium (apt-get install chromium)"


def chromium_path() -> str | None:
    for path in ("/usr/bin/chromium", shutil.which("chromium")):
        if path and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        pytest.skip("no browser: the playwright package is missing (pip install -e '.[dev]'); "
                    f"also {INSTALL}")
    path = chromium_path()
    if path is None:
        pytest.skip(f"no browser: /usr/bin/chromium not found; {INSTALL}")
    with sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=path, headless=True,
                                         args=["--autoplay-policy=no-user-gesture-required"])
        except Error as exc:
            pytest.skip(f"no usable browser: {path} did not start ({exc}); {INSTALL}")
        yield chromium
        chromium.close()


def write_video(path: Path, seed: int, frames: int = 40, fps: float = 25.0) -> str:
    """A small pulsing-disc segmentation video (1.6 s) through the pipeline's writer; returns
    the file name written (``.mp4``, or ``.webp`` with the fallback encoder)."""
    yy, xx = np.mgrid[:112, :112]
    r = 20 + 10 * np.sin(2 * np.pi * (np.arange(frames)[:, None, None] + seed) / frames)
    disc = (yy - 56) ** 2 + (xx - 56) ** 2 < r * r
    echo = (disc * 200 + 20).astype(np.uint8)
    student = (disc * 255).astype(np.uint8)
    written = V.write_video(path, echo, student, np.roll(student, 2, axis=2), {5: disc[5]},
                            threshold=0.5, found={"ED": [0], "ES": [20]},
                            traced_frames={"ED": 5}, fps=fps)
    assert written is not None and written.stat().st_size > 1000
    return written.name


def build_reports(root: Path) -> tuple[Path, Path]:
    student_dir = root / "reports" / "students" / "s1"
    videos = {}
    for seed, name in enumerate(NAMES[:2]):
        file = write_video(student_dir / "videos" / f"{H.safe_video_name(name)}.mp4", seed)
        videos[name] = f"videos/{file}"
    plot = np.full((60, 120, 3), 255, np.uint8)
    cv2.line(plot, (0, 59), (119, 0), (200, 80, 30), 2)
    (student_dir / "plots").mkdir(parents=True)
    assert cv2.imwrite(str(student_dir / "plots" / "overlays.png"), plot)
    assert cv2.imwrite(str(root / "reports" / "pareto.png"), plot)
    per_video = pd.DataFrame({"FileName": NAMES, "Split": "TEST", "n_frames": [40, 40, 30],
                              "dice_ed": [0.95, 0.70, 0.85], "dice_es": [0.93, 0.80, 0.87],
                              "EF": [60.0, 55.0, 50.0], "ef_pred": [58.0, 50.0, 52.0]})
    step = np.arange(0, 300, 10)
    curves = pd.DataFrame({"step": step, "train_loss": np.exp(-step / 80),
                           "val_loss": np.where(step % 50 == 0, np.exp(-step / 80) + .1, np.nan),
                           "val_dice_vs_teacher": np.where(step % 50 == 0, .9, np.nan)})
    student = H.write_student_page(
        student_dir, name="s1",
        metrics={"n_videos": 3, "dice": 0.85, "dice_ed": 0.83, "dice_es": 0.87, "weights": 1000},
        teacher_metrics={"dice": 0.9, "dice_ed": 0.91, "dice_es": 0.89, "weights": 5000},
        per_video=per_video, videos=videos, skipped=[("0XSHORT", "shorter than 2 frames")],
        plots=["plots/overlays.png"], training_curves=curves)
    index = H.write_index_page(
        root / "reports" / "index.html",
        students=pd.DataFrame({"name": ["s1"], "weights": [1000], "dice": [0.85],
                               "pareto": [True]}),
        summary={"best_student": "s1", "best_dice": 0.85, "teacher_dice": 0.9, "gap_best": 0.05},
        pareto_plots=["pareto.png"])
    return student, index


PLAYBACK = """async () => {
  const out = [];
  for (const v of document.querySelectorAll("video")) {
    const t0 = v.currentTime;
    await v.play();
    const until = performance.now() + 5000;
    while (v.currentTime <= t0 && performance.now() < until)
      await new Promise(r => setTimeout(r, 50));
    out.push({src: v.getAttribute("src"), readyState: v.readyState, duration: v.duration,
              t0: t0, t1: v.currentTime, error: v.error && v.error.code});
  }
  return out;
}"""


def first_column(page):
    return page.eval_on_selector_all("#per-video-table tbody tr",
                                     "rows => rows.map(r => r.cells[0].textContent.trim())")


def test_pages_in_chromium(browser, tmp_path):
    start = time.perf_counter()
    student, index = build_reports(tmp_path)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("request", lambda r: r.url.startswith("file:") or problems.append(f"fetch {r.url}"))
    page.goto(student.as_uri())

    # videos: loaded (readyState >= HAVE_CURRENT_DATA), with a duration, and they play
    page.wait_for_function("""() => [...document.querySelectorAll('video')]
                              .every(v => v.readyState >= 2)""", timeout=15000)
    videos = page.evaluate(PLAYBACK)
    assert len(videos) == 2, videos
    for v in videos:
        assert v["error"] is None and v["readyState"] >= 2, v
        assert 0 < v["duration"] < float("inf"), v
        assert v["t1"] > v["t0"], f"currentTime did not advance after play(): {v}"
    images = page.eval_on_selector_all("img", "is => is.map(i => [i.src, i.naturalWidth])")
    assert images and all(w > 0 for _, w in images), images

    if os.environ.get("ECHODFKD_SCREENSHOT"):
        shot = Path(os.environ["ECHODFKD_SCREENSHOT"])
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)

    # one row per evaluated video, worst first; the <script> FileName is text, not code
    assert first_column(page) == [EVIL, "0XNOVIDEO", "0XAAAA"]
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("#per-video-table a", has_text=EVIL).is_visible()
    caption = page.locator(f"#video-{H.safe_video_name(EVIL)} figcaption")
    assert caption.inner_text() == EVIL and caption.is_visible()
    assert page.locator("#skipped", has_text="0XSHORT").is_visible()

    # the row links to its video
    page.locator("#per-video-table a", has_text="0XAAAA").click()
    assert page.url.endswith("#video-0XAAAA")

    # a header click sorts the table, a second click reverses it
    by_name = [EVIL, "0XAAAA", "0XNOVIDEO"]     # text sorts by the locale: punctuation first
    page.locator("#per-video-table th button", has_text="FileName").click()
    assert first_column(page) == by_name
    page.locator("#per-video-table th button", has_text="FileName").click()
    assert first_column(page) == by_name[::-1]
    page.locator("#per-video-table th button", has_text="Dice ED").click()
    assert first_column(page) == [EVIL, "0XNOVIDEO", "0XAAAA"]
    assert page.locator("#training svg polyline").count() == 3

    # the student page links back to the index, the index links to the student page
    page.get_by_role("link", name="all students").click()
    assert page.url == index.as_uri()
    assert page.locator("img").evaluate("i => i.naturalWidth") > 0
    assert "0.0500" in page.locator("header").inner_text()
    page.locator('#students-table a[href="students/s1/index.html"]').click()
    assert page.url == student.as_uri()
    assert page.locator("h1").inner_text() == "Student s1"

    page.close()
    assert problems == []
    print(f"browser test: {time.perf_counter() - start:.1f} s")
