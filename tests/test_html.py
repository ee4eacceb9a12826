"""Static report pages (echodfkd.evaluation.html), without a browser: escaping, structure,
relative links only, bad input. tests/test_report_browser.py opens the pages in Chromium."""

import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from echodfkd.errors import InputError
from echodfkd.evaluation import html as H

EVIL = "<script>alert(1)</script>"


class Tables(HTMLParser):
    """Body rows (cell texts) of every table with an id, and every src/href value."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.links = {}, []
        self._table = self._row = self._cell = None
        self._in_body = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[a] for a in ("src", "href") if a in attrs]
        if tag == "table" and "id" in attrs:
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table is not None and self._in_body:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "tr":
            self._row = None
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def per_video():
    return pd.DataFrame({
        "FileName": ["0XAAA", EVIL, "0XCCC", "0XDDD"],
        "Split": ["TEST"] * 4,
        "n_frames": [64, 50, 30, 2],
        "EF": [60.1, 55.0, 40.2, 70.0],
        "dice_ed": [0.95, 0.70, 0.90, np.nan],
        "dice_es": [0.93, 0.80, 0.88, np.nan],
        "afd_ed": [1.0, 2.0, 0.0, np.nan],
        "ef_pred": [58.0, 50.0, 45.0, np.nan],
        "skip_reason": [np.nan, np.nan, np.nan, "no tracing"],
    })


METRICS = {"n_videos": 4, "dice": 0.91, "dice_ed": 0.92, "dice_es": 0.90, "afd_ed": 1.5,
           "ef_mae": 4.7, "ef_r": 0.91, "agreement_real_test": 0.95, "weights": 44757,
           "flops": 56046592}
TEACHER = {"dice": 0.93, "dice_ed": 0.94, "dice_es": 0.92, "afd_ed": 1.8, "ef_mae": 4.3,
           "ef_r": 0.92, "weights": 112969, "flops": 221175808}


def curves():
    step = np.arange(0, 500, 10)
    return pd.DataFrame({"step": step, "train_loss": np.exp(-step / 100),
                         "val_loss": np.where(step % 50 == 0, np.exp(-step / 100) + 0.1, np.nan),
                         "val_dice_vs_teacher": np.where(step % 50 == 0, 0.9, np.nan)})


def student_page(tmp_path, **overrides):
    kwargs = dict(name="s1", metrics=METRICS, teacher_metrics=TEACHER, per_video=per_video(),
                  videos={"0XAAA": "videos/0XAAA.mp4",
                          EVIL: f"videos/{H.safe_video_name(EVIL)}.webp"},
                  skipped=[("0XSHORT", "shorter than 2 frames"), ("<b>x</b>", "no <frames>")],
                  plots=["plots/overlays.png", "plots/area_curves.png"],
                  training_curves=curves())
    kwargs.update(overrides)
    path = H.write_student_page(tmp_path / "students" / "s1", **kwargs)
    return path, path.read_text(encoding="utf-8")


def test_student_page_written_atomically(tmp_path):
    path, text = student_page(tmp_path)
    assert path == tmp_path / "students" / "s1" / "index.html"
    assert text.startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]   # no .tmp left


def test_values_are_escaped(tmp_path):
    _, text = student_page(tmp_path, name="<script>alert(2)</script>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in text          # the student's name
    assert "&lt;b&gt;x&lt;/b&gt;" in text and "no &lt;frames&gt;" in text
    assert "<script>alert" not in text
    assert "<b>x" not in text
    # the page's own script is its only <script> element
    assert len(re.findall(r"<script\b", text)) == 1


def test_per_video_table_rows_and_order(tmp_path):
    _, text = student_page(tmp_path)
    rows = Tables(text).tables["per-video-table"]
    assert len(rows) == len(per_video())
    # worst first by mean(dice_ed, dice_es); the row without Dice last
    assert [r[0] for r in rows] == [EVIL, "0XCCC", "0XAAA", "0XDDD"]
    assert 'aria-sort="ascending"' in text
    assert "no tracing" in text                                    # skip_reason column shown


def test_rows_link_to_their_videos(tmp_path):
    _, text = student_page(tmp_path)
    evil_id = "video-" + H.safe_video_name(EVIL)
    assert f'<a href="#{evil_id}">' in text and f'id="{evil_id}"' in text
    assert '<a href="#video-0XAAA">' in text and 'id="video-0XAAA"' in text
    assert '<a href="#video-0XCCC">' not in text                   # no video for it
    assert '<video controls muted loop playsinline preload="auto" src="videos/0XAAA.mp4">' in text
    assert f'<img src="videos/{H.safe_video_name(EVIL)}.webp"' in text   # WebP as an image


def test_skipped_listed(tmp_path):
    _, text = student_page(tmp_path)
    assert "0XSHORT" in text and "shorter than 2 frames" in text
    _, text = student_page(tmp_path, skipped=[])
    assert "None: every selected video was rendered" in text


def test_no_network_references(tmp_path):
    _, student = student_page(tmp_path)
    index = H.write_index_page(tmp_path / "index.html", students=students_table(),
                               summary=SUMMARY, pareto_plots=["pareto.png"]).read_text()
    for text in (student, index):
        links = Tables(text).links
        assert links
        assert not [u for u in links if re.match(r"^\s*([a-z][a-z0-9+.-]*:|//)", u, re.I)]
        assert "http://" not in text and "https://" not in text
        assert "Content-Security-Policy" in text


@pytest.mark.parametrize("bad", ["https://cdn.example/x.mp4", "//cdn.example/x.mp4",
                                 "/abs/x.mp4", "file:///x.mp4", "C:/x.mp4", "javascript:x"])
def test_absolute_links_refused(tmp_path, bad):
    with pytest.raises(InputError, match="not a relative path"):
        student_page(tmp_path, videos={"0XAAA": bad})
    with pytest.raises(InputError, match="not a relative path"):
        student_page(tmp_path, plots=[bad])


def test_headline_student_next_to_teacher(tmp_path):
    _, text = student_page(tmp_path)
    row = re.search(r'<tr data-key="dice">.*?</tr>', text).group(0)
    assert ">0.9100<" in row and ">0.9300<" in row and ">-0.0200<" in row
    assert "44,757" in text and "112,969" in text


def test_teacher_column_dash_without_teacher(tmp_path):
    _, text = student_page(tmp_path, teacher_metrics={})
    row = re.search(r'<tr data-key="dice">.*?</tr>', text).group(0)
    assert '<td class="num teacher">\u2014</td>' in row
    assert "teacher does not label this source" in text
    teachers = re.findall(r'<td class="num teacher">(.*?)</td>', text)
    assert teachers and set(teachers) == {"\u2014"}


def test_split_metrics():
    student, teacher = H.split_metrics({"dice": 0.9, "teacher_dice": 0.95, "weights": 3})
    assert student == {"dice": 0.9, "weights": 3} and teacher == {"dice": 0.95}


def test_training_curves_svg(tmp_path):
    _, text = student_page(tmp_path)
    assert text.count("<svg") == 2 and text.count("<polyline") == 3
    assert "val_dice_vs_teacher" in text
    _, text = student_page(tmp_path, training_curves=None)
    assert "<svg" not in text and "No training curves recorded" in text
    with pytest.raises(InputError, match="step"):
        student_page(tmp_path, training_curves=pd.DataFrame({"train_loss": [1.0]}))


def test_bad_student_input(tmp_path):
    with pytest.raises(InputError, match="FileName"):
        student_page(tmp_path, per_video=pd.DataFrame({"dice_ed": [0.9]}))
    with pytest.raises(InputError, match="DataFrame"):
        student_page(tmp_path, per_video=[{"FileName": "a"}])
    with pytest.raises(InputError, match="FileName, reason"):
        student_page(tmp_path, skipped=["0XSHORT"])
    with pytest.raises(InputError, match="neither a video"):
        student_page(tmp_path, videos={"0XAAA": "videos/0XAAA.txt"})
    assert not (tmp_path / "students" / "s1" / "index.html").exists()


def students_table():
    return pd.DataFrame({"name": ["b4-l1-h1", "student", "<i>evil&co"],
                         "weights": [5099, 44757, 10], "flops": [7250432, 56046592, 10],
                         "dice": [0.76, 0.92, 0.1], "pareto": [True, True, False]})


SUMMARY = {"n_points": 3, "best_student": "student", "best_dice": 0.9208,
           "teacher_dice": 0.9263, "gap_best": 0.0055, "gap_main": 0.0055, "rho_x": 1.0}


def test_index_page(tmp_path):
    path = H.write_index_page(tmp_path / "reports" / "index.html", students=students_table(),
                              summary=SUMMARY, pareto_plots=["pareto.png", "annotation_free.png"])
    text = path.read_text(encoding="utf-8")
    assert [p.name for p in path.parent.iterdir()] == ["index.html"]
    rows = Tables(text).tables["students-table"]
    assert [r[0].split()[0] for r in rows] == ["b4-l1-h1", "student", "<i>evil&co"]
    assert '<a href="students/student/index.html">student</a>' in text
    assert 'href="students/%3Ci%3Eevil%26co/index.html"' in text         # URL-quoted
    assert "&lt;i&gt;evil&amp;co" in text and "<i>evil" not in text
    assert '<img src="pareto.png"' in text and '<img src="annotation_free.png"' in text
    assert "0.0055" in text and "Distillation gap" in text


def test_index_bad_input(tmp_path):
    out = tmp_path / "index.html"
    with pytest.raises(InputError, match="folder name"):
        H.write_index_page(out, students=pd.DataFrame({"name": ["../x"]}), summary={},
                           pareto_plots=[])
    with pytest.raises(InputError, match="name"):
        H.write_index_page(out, students=pd.DataFrame({"dice": [1.0]}), summary={},
                           pareto_plots=[])
    with pytest.raises(InputError, match="relative"):
        H.write_index_page(out, students=students_table(), summary={},
                           pareto_plots=["https://x/p.png"])
    assert not out.exists()


def test_safe_video_name():
    assert H.safe_video_name("0X1A2B3C4D5E6F") == "0X1A2B3C4D5E6F"          # kept as is
    assert H.safe_video_name("a_b-C9") == "a_b-C9"
    names = ["a b", "a_b", "a/b", "a.b", "../etc/passwd", EVIL, "é", "a" * 200,
             "x-0123456789", "x-0123456789abcdef"]
    stems = [H.safe_video_name(n) for n in names]
    assert len(set(stems)) == len(names)                                 # unique
    assert stems == [H.safe_video_name(n) for n in names]                # deterministic
    for name, stem in zip(names, stems):
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,100}", stem), stem
        if name in ("a_b", "x-0123456789abcdef"):
            assert stem == name
        else:   # changed, too long, or looking like a hashed stem: hashed
            assert re.search(r"-[0-9a-f]{10}$", stem), (name, stem)
    assert H.safe_video_name("a b").startswith("a_b-")
    with pytest.raises(InputError, match="empty"):
        H.safe_video_name("")
    with pytest.raises(InputError, match="string"):
        H.safe_video_name(None)


def test_no_work_at_import():
    code = ("import sys, echodfkd.evaluation.html as h; "
            "print('jinja2' in sys.modules, h._environment.cache_info().currsize)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "0"]
