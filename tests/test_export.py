import pytest
import torch

from echodfkd.errors import InputError
from echodfkd.export import EXPORT_NAME, export_student, load_exported, state_shapes
from echodfkd.models.convlstm import StudentNet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _trained_like(blocks, layers, hidden, skip=False):
    """A student with non-trivial BatchNorm statistics (as after training), in eval mode."""
    torch.manual_seed(3)
    net = StudentNet(blocks, layers, hidden, skip=skip)
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
    cfg = StudentNet(2, 2, 3).config()
    assert state_shapes(cfg, 1, 8, 12) == [(1, 3, 8, 12)] * 4 + [(1, 6, 4, 6)] * 4


def test_bad_input_and_files(tmp_path):
    exported = load_exported(export_student(_trained_like(2, 1, 3), tmp_path / "s.ts", size=16))
    with pytest.raises(InputError, match=r"divisible by 2.*\(1, 2, 1, 9, 8\)"):
        exported(torch.rand(1, 2, 1, 9, 8))
    _, state = exported(torch.rand(1, 2, 1, 8, 8))
    with pytest.raises(InputError, match="state does not match"):
        exported(torch.rand(2, 2, 1, 8, 8), state)
    (tmp_path / "junk.ts").write_bytes(b"not a model")
    with pytest.raises(InputError, match="junk.ts.*not a TorchScript file"):
        load_exported(tmp_path / "junk.ts")
    with pytest.raises(FileNotFoundError, match="missing.ts"):
        load_exported(tmp_path / "missing.ts")
