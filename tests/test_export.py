import pytest
import torch

from echodfkd.errors import InputError
from echodfkd.student.export import EXPORT_NAME, export_student, load_exported, state_shapes
from echodfkd.student.model import StudentNet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _trained_like(blocks, layers, hidden, skip=False):
    """A student with non-trivial BatchNorm statistics (as after training), in eval mode."""
    torch.manual_seed(3)
    net = StudentNet(blocks, layers, hidden, kernel_size=3, skip=skip)
    with torch.no_grad():
        net(torch.rand(2, 3, 1, 16, 16))  # train-mode pass updates the running stats
    return net.eval()


@pytest.mark.parametrize("cfg", [(2, 1, 3, False), (3, 2, 2, False), (2, 1, 3, True)])
def test_exported_equals_eager_with_state_carried(tmp_path, cfg):
    net = _trained_like(*cfg)
    path = export_student(net, tmp_path / EXPORT_NAME, size=16)
    assert path == tmp_path / EXPORT_NAME and path.exists()
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind
    exported = load_exported(path)
    x = torch.rand(2, 7, 1, 16, 16)
    with torch.no_grad():
        whole, state = net(x)
    first, s = exported(x[:, :3])            # two chunks, the state carried between them
    second, s = exported(x[:, 3:], s)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    for (h, c), (he, ce) in zip(state, s):
        assert torch.allclose(h, he, atol=1e-5) and torch.allclose(c, ce, atol=1e-5)


def test_exported_serves_other_frame_sizes(tmp_path):
    net = _trained_like(2, 1, 3)
    exported = load_exported(export_student(net, tmp_path / "s.ts", size=16))
    x = torch.rand(1, 3, 1, 8, 12)           # traced at 16x16, run at 8x12
    with torch.no_grad():
        eager, _ = net(x)
    assert torch.allclose(exported(x)[0], eager, atol=1e-5)


def test_state_shapes_hand_checked():
    cfg = StudentNet(2, 2, 3, kernel_size=3, skip=False).config()
    assert state_shapes(cfg, 1, 8, 12) == [(1, 3, 8, 12)] * 4 + [(1, 6, 4, 6)] * 4


# --- ONNX (echodfkd.student.export.export_student_onnx): skipped where onnx/onnxruntime are absent ---

def _onnx():
    pytest.importorskip("onnx", reason="onnx not installed: the ONNX export is optional")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: the ONNX student "
                                              "cannot be run")
    from echodfkd.student import export
    return export


@pytest.mark.parametrize("cfg", [(2, 1, 3, False), (3, 2, 2, False), (2, 1, 3, True)])
def test_onnx_equals_eager_with_state_carried(tmp_path, cfg):
    export = _onnx()
    net = _trained_like(*cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    path = export.export_student_onnx(net, tmp_path / export.ONNX_NAME, size=16)
    assert path == tmp_path / "student.onnx" and path.exists()
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind
    again = export.export_student_onnx(net, tmp_path / "again.onnx", size=16)
    assert again.read_bytes() == path.read_bytes()  # deterministic
    # the model is left as it was (the exporter restores the training flag of what it traces)
    assert not net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    student = export.load_exported_onnx(path, threads=1)
    assert student.config == net.config()
    x = torch.rand(2, 7, 1, 16, 16)
    with torch.no_grad():
        whole, state = net(x)
    first, s = student(x[:, :3])             # two chunks, the state carried between them
    second, s = student(x[:, 3:], s)
    assert first.dtype == torch.float32 and first.shape == (2, 3, 1, 16, 16)
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-5)
    for (h, c), (he, ce) in zip(state, s):
        assert torch.allclose(h, he, atol=1e-5) and torch.allclose(c, ce, atol=1e-5)


def test_onnx_serves_other_batches_and_frame_sizes(tmp_path):
    export = _onnx()
    net = _trained_like(2, 1, 3)
    student = export.load_exported_onnx(export.export_student_onnx(net, tmp_path / "s.onnx",
                                                                   size=16))
    for x in (torch.rand(1, 3, 1, 8, 12), torch.rand(3, 2, 1, 20, 4)):  # traced 1 x 16x16
        with torch.no_grad():
            eager, _ = net(x)
        assert torch.allclose(student(x)[0], eager, atol=1e-5)


def test_onnx_names_hand_checked():
    from echodfkd.student.export import onnx_names
    assert onnx_names(StudentNet(2, 1, 3, kernel_size=3, skip=False).config()) == (
        ["frame", "h_0", "c_0", "h_1", "c_1"], ["logits", "h_0_out", "c_0_out", "h_1_out",
                                                "c_1_out"])


def _formats(fmt):
    """(export, load, suffix, what a junk file is called) of one export format."""
    if fmt == "onnx":
        export = _onnx()
        return export.export_student_onnx, export.load_exported_onnx, "onnx", "an ONNX model"
    return export_student, load_exported, "ts", "a TorchScript file"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_bad_input_and_files(tmp_path, fmt):
    export, load, suffix, kind = _formats(fmt)
    student = load(export(_trained_like(2, 1, 3), tmp_path / f"s.{suffix}", size=16))
    with pytest.raises(InputError, match=r"divisible by 2.*\(1, 2, 1, 9, 8\)"):
        student(torch.rand(1, 2, 1, 9, 8))
    _, state = student(torch.rand(1, 2, 1, 8, 8))
    with pytest.raises(InputError, match="state does not match"):
        student(torch.rand(2, 2, 1, 8, 8), state)
    (tmp_path / f"junk.{suffix}").write_bytes(b"not a model")
    with pytest.raises(InputError, match=f"junk.{suffix}.*not {kind}"):
        load(tmp_path / f"junk.{suffix}")
    with pytest.raises(FileNotFoundError, match=f"missing.{suffix}"):
        load(tmp_path / f"missing.{suffix}")


def test_onnx_without_config_is_refused(tmp_path):
    export = _onnx()
    import onnx
    path = export.export_student_onnx(_trained_like(2, 1, 3), tmp_path / "s.onnx", size=16)
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    with pytest.raises(InputError, match="bare.onnx.*no 'config' metadata"):
        export.load_exported_onnx(tmp_path / "bare.onnx")
