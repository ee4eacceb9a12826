"""echodfkd.evaluation.video: rendered frames, encoded files, example selection."""

import numpy as np
import pandas as pd
import pytest

from echodfkd.errors import InputError
from echodfkd.evaluation import video as V

S = 3            # scale used throughout: the echo panel is 336 x 336
ECHO = 112 * S


def disk(r, cy=56, cx=56):
    yy, xx = np.mgrid[:112, :112]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def clip(t_n=4, r=20, grey=80):
    """Constant grey frames and a student disk of radius r (uint8 round(p*255))."""
    frames = np.full((t_n, 112, 112), grey, np.uint8)
    student = np.repeat((disk(r) * 255).astype(np.uint8)[None], t_n, axis=0)
    return frames, student


def render(frames, student, teacher=None, traced=None, **kw):
    kw.setdefault("found", {})
    kw.setdefault("traced_frames", {})
    return V.render_frames(frames, student, teacher, {} if traced is None else traced,
                           threshold=0.5, scale=S, **kw)


def has(img, rgb):
    """bool (H, W): pixels exactly of colour rgb."""
    return np.all(img == np.array(rgb, np.uint8), axis=-1)


def test_shape_and_dtype():
    frames, student = clip(4)
    out = render(frames, student, student)
    assert out.dtype == np.uint8
    assert out.shape[0] == 4 and out.shape[2] == ECHO and out.shape[3] == 3
    assert out.shape[1] > ECHO and out.shape[1] % 2 == 0          # panels below; even for H.264
    small = V.render_frames(frames, student, None, {}, threshold=0.5, found={},
                            traced_frames={}, scale=2)
    assert small.shape[2] == 224 and small.shape[1] % 2 == 0


def test_student_outline_lies_on_the_disk_boundary():
    frames, student = clip(2, r=20)
    student[1] = 0                                              # frame 1: nothing predicted
    out = render(frames, student)
    echo = out[0, :ECHO, :ECHO]
    blue = has(echo, V.STUDENT_RGB)
    m = disk(20)
    interior = m & np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1)
    boundary = m & ~interior                                    # 112 x 112 boundary pixels
    near = boundary.copy()                                      # boundary dilated by one pixel
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            near |= np.roll(np.roll(boundary, dy, 0), dx, 1)
    ys, xs = np.nonzero(blue)
    assert len(ys) > 200
    assert near[ys // S, xs // S].all()                         # nowhere but along the boundary
    hit = np.zeros_like(m)
    hit[ys // S, xs // S] = True
    assert (hit & boundary).sum() >= 0.95 * boundary.sum()      # all the way round
    assert not has(echo, V.TEACHER_RGB).any() and not has(echo, V.HUMAN_RGB).any()
    assert (echo[~blue] == 80).all()                            # the rest is the grey echo
    assert not has(out[1, :ECHO, :ECHO], V.STUDENT_RGB).any()   # empty mask: no outline


def test_teacher_and_tracing_colours_and_legend():
    frames, student = clip(3)
    teacher = np.roll(student, 10, axis=2)
    traced = {1: disk(30)}
    with_t = render(frames, student, teacher, traced, traced_frames={"ED": 1})
    without = render(frames, student, None, traced, traced_frames={"ED": 1})
    assert has(with_t[0, :ECHO, :ECHO], V.TEACHER_RGB).any()
    assert has(with_t[0, ECHO:], V.TEACHER_RGB).any()           # legend swatch, area curve
    assert not has(without, V.TEACHER_RGB).any()                # nowhere in any frame
    band = slice(ECHO + 16, ECHO + 32)                          # first legend row
    assert not np.array_equal(with_t[0, band], without[0, band])
    # human tracing outlined on the traced frame only
    assert has(without[1, :ECHO, :ECHO], V.HUMAN_RGB).any()
    assert not has(without[0, :ECHO, :ECHO], V.HUMAN_RGB).any()
    assert not has(without[2, :ECHO, :ECHO], V.HUMAN_RGB).any()


def test_cursor_moves_with_the_frame():
    frames, student = clip(10)
    student = student.copy()
    for t in range(10):                                         # a changing area curve
        student[t] = (disk(10 + 2 * t) * 255).astype(np.uint8)
    out = render(frames, student, found={"ED": [9], "ES": [0]},
                 traced_frames={"ED": 8, "ES": 1})
    bottom = out[:, -80:]                                       # inside the area panel
    cols = [int(has(bottom[t], V.CURSOR_RGB).sum(axis=0).argmax()) for t in range(10)]
    assert all(a < b for a, b in zip(cols, cols[1:]))
    assert has(bottom[0], V.CURSOR_RGB)[:, cols[0]].sum() >= 30  # a vertical line
    assert not has(bottom[0], V.CURSOR_RGB)[:, cols[5]].any()    # not at frame 5's place


def decode(path):
    if path.suffix == ".webp":
        from PIL import Image, ImageSequence
        with Image.open(path) as im:
            return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])
    import cv2
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f[..., ::-1])
    cap.release()
    return np.stack(out)


@pytest.mark.parametrize("backend", [None] + V.available_backends())
def test_encode_decodes_to_the_frames(tmp_path, backend):
    frames, student = clip(6)
    rgb = render(frames, student)
    path = V.encode_video(rgb, tmp_path / "sub" / "v.mp4", 25, backend=backend)
    assert path.exists() and path.suffix in (".mp4", ".webp")
    if backend is None:
        assert path.suffix == (".webp" if V.available_backends()[0] == "webp" else ".mp4")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]   # no temporary left
    dec = decode(path)
    assert dec.shape == rgb.shape
    assert np.abs(dec.astype(int) - rgb).mean() < 8                      # lossy but close
    again = V.encode_video(rgb, tmp_path / "again.mp4", 25, backend=backend)
    assert again.read_bytes() == path.read_bytes()                       # deterministic


def test_odd_size_is_padded(tmp_path):
    rgb = np.full((3, 11, 13, 3), 200, np.uint8)
    dec = decode(V.encode_video(rgb, tmp_path / "odd.mp4", 10))
    assert dec.shape == (3, 12, 14, 3)


def test_write_video(tmp_path):
    frames, student = clip(5)
    path = V.write_video(tmp_path / "w.mp4", frames, student, None, {}, threshold=0.5,
                         found={"ED": [0]}, traced_frames={}, fps=50)
    assert decode(path).shape == render(frames, student, found={"ED": [0]}).shape


def test_one_frame_video_writes_nothing(tmp_path):
    frames, student = clip(1)
    assert V.write_video(tmp_path / "one.mp4", frames, student, None, {}, threshold=0.5,
                         found={}, traced_frames={}, fps=50) is None
    assert list(tmp_path.iterdir()) == []


def test_bad_input_raises_naming_it(tmp_path):
    frames, student = clip(4)
    with pytest.raises(InputError, match=r"student has shape \(3, 112, 112\), frames have shape "
                                         r"\(4, 112, 112\)"):
        render(frames, student[:3])
    with pytest.raises(InputError, match=r"teacher has shape \(4, 56, 56\)"):
        render(frames, student, student[:, :56, :56])
    with pytest.raises(InputError, match=r"traced\[2\] has shape \(56, 56\)"):
        render(frames, student, traced={2: np.zeros((56, 56), bool)})
    with pytest.raises(InputError, match=r"frames must be uint8 \(T, H, W\), got shape "
                                         r"\(112, 112\)"):
        render(frames[0], student)
    with pytest.raises(InputError, match="threshold"):
        V.render_frames(frames, student, None, {}, threshold=1.0, found={}, traced_frames={})
    with pytest.raises(InputError, match=r"found\['ES'\] frame = 4 is outside"):
        render(frames, student, found={"ES": [1, 4]})
    with pytest.raises(InputError, match=r"got shape \(4, 112, 112\)"):
        V.encode_video(frames, tmp_path / "x.mp4", 25)
    with pytest.raises(InputError, match="fps"):
        V.encode_video(render(frames, student), tmp_path / "x.mp4", 0)
    with pytest.raises(InputError, match="'h265'"):
        V.encode_video(render(frames, student), tmp_path / "x.mp4", 25, backend="h265")
    assert list(tmp_path.iterdir()) == []


def per_video():
    # mean Dice: B .5, D .75, H .75, A .875, E .9375, C 1.0 (exact in binary);
    # F is skipped, G has no score. Eligible median = (.75 + .875) / 2 = .8125.
    return pd.DataFrame({
        "FileName": ["A", "B", "C", "D", "E", "F", "G", "H"],
        "Split": "TEST",
        "dice_ed": [0.75, 0.5, 1.0, 0.5, 0.875, 0.1, np.nan, 0.75],
        "dice_es": [1.0, 0.5, 1.0, 1.0, 1.0, 0.1, np.nan, 0.75],
        "skip_reason": [np.nan, "", np.nan, np.nan, np.nan, "ES traced on several frames",
                        "no tracings", np.nan],
    })


def test_select_examples():
    t = per_video()
    # worst 2: B, then D before H (tie at .75, by name); typical 2: A and H, both .0625 from
    # the median (tie, by name)
    assert V.select_examples(t, 4) == ["B", "D", "A", "H"]
    assert V.select_examples(t, 1) == ["B"]
    assert V.select_examples(t, 3) == ["B", "D", "A"]
    assert V.select_examples(t, 0) == []
    assert V.select_examples(t, 100) == ["B", "D", "H", "A", "E", "C"]   # all, F/G left out
    shuffled = t.sample(frac=1.0, random_state=3)
    assert V.select_examples(shuffled, 4) == ["B", "D", "A", "H"]
    assert V.select_examples(t, 4, score="dice_es") == ["B", "D", "A", "H"]   # the mean too
    # dice_ed alone: B .5 (tie with D, by name) worst; median .75 = A's (tie with H, by name)
    assert V.select_examples(t.drop(columns="dice_es"), 2, score="dice_ed") == ["B", "A"]
    t["agreement"] = [0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0625]
    # eligible H .0625, E .375, D .5, C .625, B .75, A .875: median .5625, D and C .0625 away
    assert V.select_examples(t, 2, score="agreement") == ["H", "C"]
    assert V.select_examples(t, 3, score="agreement") == ["H", "E", "C"]
    with pytest.raises(InputError, match="-1"):
        V.select_examples(t, -1)
    with pytest.raises(InputError, match="'ef_r'"):
        V.select_examples(t, 2, score="ef_r")


def test_falls_back_to_webp_without_h264(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    if V._unavailable("webp") is not None:
        pytest.skip("Pillow without WebP")
    monkeypatch.setattr(V, "_unavailable", lambda b: None if b == "webp" else "not installed")
    frames, student = clip(3)
    path = V.write_video(tmp_path / "v.mp4", frames, student, None, {}, threshold=0.5,
                         found={}, traced_frames={}, fps=20)
    assert path == tmp_path / "v.webp" and not (tmp_path / "v.mp4").exists()
    assert decode(path).shape == render(frames, student).shape
