"""echodfkd/runtime.py: devices, threads, batch sizes, malloc tuning for dask workers."""

import subprocess
import sys

import pytest
import torch

from echodfkd import runtime
from echodfkd.errors import InputError


def test_teacher_batch_cpu_default_and_explicit():
    assert runtime.teacher_batch(0, "cpu") == 16      # under glibc's 32 MiB mmap ceiling
    assert runtime.teacher_batch(48, "cpu") == 48
    assert runtime.teacher_batch(48, "cuda") == 48    # an explicit value is never changed


def test_set_threads_refuses_negative():
    with pytest.raises(InputError, match="train.threads must be >= 0 .* got -1"):
        runtime.set_threads(-1)
    before = torch.get_num_threads()
    runtime.set_threads(0)                            # 0 leaves torch's default
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt: Linux only")
def test_tune_malloc_applies_once_in_a_worker_like_process():
    """In a process started as dask's nanny starts workers (MALLOC_TRIM_THRESHOLD_ set), the
    call succeeds, and a second call is free (cached)."""
    code = ("from echodfkd.runtime import tune_malloc; a = tune_malloc(); b = tune_malloc(); "
            "print(a, b, tune_malloc.cache_info().hits)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"MALLOC_TRIM_THRESHOLD_": "65536", "PATH": ""}, check=True)
    assert out.stdout.split() == ["True", "True", "1"]


def test_ingest_and_runtime_import_no_torch():
    """Ingest workers decode videos: importing the ingest module must not load torch."""
    code = "import sys, echodfkd.data.ingest, echodfkd.runtime; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
