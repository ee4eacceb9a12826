"""The benchmark scripts that must work where they cannot measure (bench/)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: the check would run")
def test_gpu_check_exits_cleanly_without_cuda():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], out.stdout
