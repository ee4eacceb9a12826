"""End to end: `dvc repro` in a temporary clone of the repository on a tiny configuration.

The clone holds the working tree's tracked and untracked (not ignored) files, committed in a
fresh git repository, so the test sees exactly what a user's clone would. Runs in a few minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# Tiny overrides of params.yaml: a handful of short phantom videos, a few quick epochs.
TINY = {
    "phantom": {
        "real": {"train": 8, "val": 3, "test": 4, "frames": 32},
        "synthetic": {"train": 8, "val": 3, "test": 3, "frames": 32},
    },
    "teacher": {"epochs": 3},
    "train": {"epochs": 2, "steps_per_epoch": 3, "batch": 2, "sequence_length": 8},
    "pareto": {"blocks": [2], "layers_per_block": [1], "hidden": [2]},
}


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif k in base:
            base[k] = v
    return base


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    (dst / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    # The committed lock and git-tracked outputs belong to the default configuration.
    (dst / "dvc.lock").unlink(missing_ok=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    _run(["git", "init", "-q"], dst)
    _run([*git, "add", "-A"], dst)
    _run([*git, "commit", "-qm", "tiny"], dst)
    return dst


@pytest.mark.slow
def test_repro_builds_everything_then_is_up_to_date(clone: Path):
    _run(["dvc", "repro"], clone)
    for name in ("real", "synthetic"):
        assert (clone / f"data/raw/{name}/FileList.csv").is_file()
        assert (clone / f"data/frames/{name}.zarr/zarr.json").is_file()
    metrics = json.loads((clone / "reports/metrics.json").read_text())
    for key in ("dice_ed", "dice_es", "afd_ed", "afd_es", "teacher_dice_ed", "weights", "flops"):
        assert key in metrics, key
    assert 0.0 <= metrics["dice_ed"] <= 1.0
    assert (clone / "reports/pareto.csv").is_file()
    # Nothing changed: a second repro must not run any stage.
    status = _run(["dvc", "status"], clone).stdout
    assert "up to date" in status, status
    again = _run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again, again


@pytest.mark.slow
def test_exp_run_with_param_then_metrics_diff(clone: Path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    _run([*git, "add", "-A"], clone)
    _run([*git, "commit", "-qm", "baseline", "--allow-empty"], clone)
    _run(["dvc", "exp", "run", "-S", "student.hidden=4"], clone)
    diff = _run(["dvc", "metrics", "diff", "--json"], clone).stdout
    changes = json.loads(diff)
    assert "reports/metrics.json" in changes, changes
    assert "weights" in changes["reports/metrics.json"], changes
