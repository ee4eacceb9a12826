"""A dask cluster for tests, started as a user starts one: `dask scheduler` and `dask worker`
processes on the loopback interface, each worker single-threaded."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def dask_cluster(tmp_path: Path, n_workers: int = 2, *, nanny: bool = True
                 ) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """Start a scheduler and ``n_workers`` worker processes (``--no-nanny`` when ``nanny`` is
    False, so that a killed worker stays dead); yield the scheduler's address and the worker
    processes; kill them all on exit. Skips the test without the `dask` command line."""
    dask_cli = Path(sys.executable).parent / "dask"
    if not dask_cli.exists():
        pytest.skip(f"no dask command line at {dask_cli}")
    from distributed import Client

    sched_file = tmp_path / "scheduler.json"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scheduler = subprocess.Popen([str(dask_cli), "scheduler", "--host", "127.0.0.1", "--port",
                                  "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                                 **quiet)
    workers: list[subprocess.Popen] = []
    try:
        while not (sched_file.exists() and sched_file.stat().st_size):
            assert scheduler.poll() is None, "dask scheduler exited"
            time.sleep(0.1)
        for _ in range(n_workers):
            workers.append(subprocess.Popen(
                [str(dask_cli), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                 "--no-dashboard", "--local-directory", str(tmp_path / "workers")]
                + ([] if nanny else ["--no-nanny"]), **quiet))
        with Client(scheduler_file=str(sched_file), timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=60)
            address = client.scheduler.address
        yield address, workers
    finally:
        for p in [*workers, scheduler]:
            p.kill()
            p.wait(20)
