"""End to end: `dvc repro` in temporary clones of the repository on tiny configurations.

A clone holds the working tree's tracked and untracked (not ignored) files, committed in a fresh
git repository, so the tests see exactly what a user's clone would. Two set-ups:

- the embedded default (phantom) made tiny: repro, up to date, a metrics-code edit reruns
  evaluation only, ``dvc exp run -S`` of a student and of composite/conditioned training;
- EchoNet-like folders outside the repository (no phantom stage runs), a teacher given only as
  cached ``.seg.npz`` outputs on one source, and an evaluation-only source with tracings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import cluster

ROOT = Path(__file__).resolve().parents[1]

# Tiny overrides of params.yaml: a handful of short phantom videos, a few quick epochs.
TINY = {
    "phantom": {
        "real": {"train": 8, "val": 3, "test": 4, "frames": 32},
        "synthetic": {"train": 8, "val": 3, "test": 3, "frames": 32},
    },
    "teacher": {"epochs": 3},
    "train": {"epochs": 2, "steps_per_epoch": 3, "batch": 2, "sequence_length": 8},
}
# Replaced whole: the main student and one grid row.
STUDENT = {"blocks": 2, "layers_per_block": 1, "hidden": 3, "kernel_size": 3, "skip": False}
GRID = {"b2-l1-h2": {"blocks": 2, "layers_per_block": 1, "hidden": 2, "kernel_size": 3,
                     "skip": False}}
STUDENTS = {"student": "student", "b2-l1-h2": "grid.b2-l1-h2"}
RAN = re.compile(r"Running stage '([^']+)'")
TEACHER_KEYS = ("teacher_", "_teacher", "_teacher_ref", "agreement_")


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif k in base:
            base[k] = v
    return base


def _trace_file(cwd: Path) -> Path:
    """Where the stages of a clone record the params they declare and read (outside it)."""
    return cwd.parent / f"{cwd.name}-params-trace.jsonl"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["ECHODFKD_PARAMS_TRACE"] = str(_trace_file(cwd))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]


def _clone(dst: Path, params: dict) -> Path:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The committed lock and git-tracked outputs belong to the default configuration.
    (dst / "dvc.lock").unlink(missing_ok=True)
    shutil.rmtree(dst / "models" / "teacher", ignore_errors=True)
    _run(["git", "init", "-q"], dst)
    _run([*GIT, "add", "-A"], dst)
    _run([*GIT, "commit", "-qm", "tiny"], dst)
    return dst


def _default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    params = _merge(_default_params(), TINY)
    params.update(student=STUDENT, grid=GRID, students=STUDENTS)
    return _clone(tmp_path_factory.mktemp("clone"), params)


def _metrics(clone: Path, name: str = "student") -> dict:
    return json.loads((clone / f"reports/students/{name}/metrics.json").read_text())


@pytest.mark.slow
def test_repro_builds_everything_then_is_up_to_date(clone: Path):
    _run(["dvc", "repro"], clone)
    for name in ("real", "synthetic"):
        assert (clone / f"data/raw/{name}/FileList.csv").is_file()
        assert (clone / f"data/frames/{name}.zarr/zarr.json").is_file()
    metrics = _metrics(clone)
    # (EF keys are absent when a barely trained student finds no LV: undefined, not NaN)
    for key in ("dice_ed", "dice_es", "afd_ed", "afd_es", "teacher_dice_ed", "teacher_ef_mae",
                "agreement_synthetic_test", "weights", "flops"):
        assert key in metrics, key
    assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in metrics.values())
    assert 0.0 <= metrics["dice_ed"] <= 1.0
    assert (clone / "reports/students/b2-l1-h2/point.json").is_file()
    summary = json.loads((clone / "reports/pareto_summary.json").read_text())
    assert {"gap_best", "gap_main", "best_student", "teacher_dice"} <= set(summary)
    # Nothing changed: a second repro must not run any stage.
    status = _run(["dvc", "status"], clone).stdout
    assert "up to date" in status, status
    again = _run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in again, again


@pytest.mark.slow
def test_no_stage_reads_a_param_it_does_not_declare(clone: Path):
    """Every key a stage script declared or read while `dvc repro` ran it lies under that
    stage's params in dvc.lock, so DVC reruns the stage whenever a value it reads changes."""
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    by_cmd = {st["cmd"]: (name, [k for f in st.get("params", {}).values() for k in f])
              for name, st in lock.items()}
    rows = [json.loads(line) for line in _trace_file(clone).read_text().splitlines()]
    seen = set()
    for row in rows:
        cmd = "python " + " ".join(row["argv"])
        assert cmd in by_cmd, cmd
        name, declared = by_cmd[cmd]
        key = row.get("read", row.get("declared"))
        assert any(key == d or key.startswith(d + ".") for d in declared), (name, key, declared)
        seen.add(name)
    assert seen == set(lock), set(lock) - seen   # every stage read its values this way

@pytest.mark.slow
def test_editing_metrics_code_reruns_evaluation_only(clone: Path):
    metrics_py = clone / "echodfkd" / "evaluation" / "metrics.py"
    original = metrics_py.read_text()
    try:
        metrics_py.write_text(original + "\n# an edit\n")
        status = _run(["dvc", "status", "--json"], clone).stdout
        changed = sorted(json.loads(status))
        assert changed and all(s.startswith("evaluate@") or s == "pareto_report"
                               for s in changed), changed
        assert {"evaluate@student", "evaluate@b2-l1-h2", "pareto_report"} <= set(changed)
    finally:
        metrics_py.write_text(original)
    assert "up to date" in _run(["dvc", "status"], clone).stdout


@pytest.mark.slow
def test_exp_run_with_param_then_metrics_diff(clone: Path):
    _run([*GIT, "add", "-A"], clone)
    _run([*GIT, "commit", "-qm", "baseline", "--allow-empty"], clone)
    out = _run(["dvc", "exp", "run", "-S", "student.hidden=16"], clone).stdout
    # only the main student's stages and the report rerun
    assert set(RAN.findall(out)) == {"train@student", "infer@student-real",
                                     "infer@student-synthetic", "evaluate@student",
                                     "pareto_report"}, out
    changes = json.loads(_run(["dvc", "metrics", "diff", "--json"], clone).stdout)
    key = "reports/students/student/metrics.json"
    assert key in changes and "weights" in changes[key], changes
    # -S on a grid row reruns only that row (and the report)
    out = _run(["dvc", "exp", "run", "-S", "grid.b2-l1-h2.hidden=1"], clone).stdout
    assert set(RAN.findall(out)) == {"train@b2-l1-h2", "infer@b2-l1-h2-real",
                                     "infer@b2-l1-h2-synthetic", "evaluate@b2-l1-h2",
                                     "pareto_report"}, out


@pytest.mark.slow
def test_exp_run_composite_batches_and_ef_condition(clone: Path):
    _run(["dvc", "exp", "run", "-S", "train.sources=synthetic:TRAIN@3 real:TRAIN@1",
          "-S", "train.filter_column=EF", "-S", "train.filter_min=10",
          "-S", "train.filter_max=60"], clone)
    train = json.loads((clone / "models/students/student/train.json").read_text())
    params = yaml.safe_load((clone / "params.yaml").read_text())
    assert params["train"]["sources"] == "synthetic:TRAIN@3 real:TRAIN@1"
    # both sources took part, each filtered to 10 <= EF <= 60
    from echodfkd.data.store import open_frames
    expected = 0
    for src in ("synthetic", "real"):
        idx = open_frames(clone / f"data/frames/{src}.zarr").index
        rows = idx[(idx["Split"] == "TRAIN") & idx["EF"].between(10, 60)]
        expected += len(rows)
    assert train["train_videos"] == expected, train


@pytest.fixture(scope="module")
def echonet_clone(tmp_path_factory) -> Path:
    """Two EchoNet-like folders outside the repo: A (unlabelled, with teacher outputs only)
    and B (human tracings, no teacher outputs: evaluation only)."""
    from echodfkd.data.phantom import generate_set

    data = tmp_path_factory.mktemp("echonet")
    generate_set(data / "A", echonet_lengths=[], style="synthetic", seed=3, n_train=8, n_val=3, n_test=2,
                 n_extra=0, n_frames=24, progress=False)
    generate_set(data / "B", echonet_lengths=[], style="real", seed=4, n_train=2, n_val=1, n_test=4,
                 n_extra=0, n_frames=24, progress=False)
    seg = data / "A-teacher-outputs"
    seg.mkdir()
    for f in sorted((data / "A" / "GroundTruth").glob("*.npz")):
        with np.load(f) as z:
            masks = z["masks"]
        # what the EchoNet research code writes: uint8 sigmoid*255, (T, 1, 112, 112)
        np.savez_compressed(seg / f"{f.stem}.seg.npz", (masks[:, None] * 230).astype(np.uint8))
    params = _merge(_default_params(), TINY)
    params["phantom"] = {}
    params["sources"] = {"A": {"path": str(data / "A"), "teacher": True},
                         "B": {"path": str(data / "B"), "teacher": False}}
    params["teacher"]["members"] = [f"outputs:{seg}"]
    params["teacher"]["fit_source"] = "A"
    params.update(student=STUDENT, grid={}, students={"student": "student"})
    params["train"].update({"sources": "A:TRAIN", "val": "A:VAL"})
    params["evaluate"].update({"source": "B", "split": "TEST", "agreement_source": "B",
                               "agreement_split": "TEST", "sources": ["B"]})
    return _clone(tmp_path_factory.mktemp("echonet_clone"), params)


@pytest.mark.slow
def test_outputs_only_teacher_and_evaluation_only_source(echonet_clone: Path):
    out = _run(["dvc", "repro"], echonet_clone)
    assert "phantom" not in out.stdout and not (echonet_clone / "data/raw/A").exists()
    m = _metrics(echonet_clone)
    assert {"dice_ed", "dice_es", "afd_ed", "afd_es", "weights"} <= set(m), m
    assert not [k for k in m if any(t in k for t in TEACHER_KEYS)], m
    assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in m.values()), m
    masks = json.loads((echonet_clone / "data/teacher/B.zarr/zarr.json").read_text())
    assert masks["attributes"]["covered"] is False


@pytest.fixture
def dask_cluster(tmp_path):
    """A scheduler and two single-threaded worker processes started with the `dask` command
    line, loopback only, as a user starts them; stopped afterwards."""
    with cluster.dask_cluster(tmp_path, 2) as (address, _):
        yield address


def _outs(clone: Path, stages: tuple[str, ...]) -> dict:
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    return {k: [(o["path"], o.get("md5")) for o in v["outs"]] for k, v in lock.items()
            if k.startswith(stages)}


@pytest.mark.slow
def test_repro_on_a_command_line_cluster_matches_local_threads(tmp_path_factory, dask_cluster):
    """`dvc repro teacher_infer` (the stages that read ``ingest.scheduler`` and what they
    depend on) with the scheduler set to a cluster started with `dask scheduler` / `dask
    worker` (2 processes); then the same with local threads: ingest and teacher_infer rerun
    (their params changed) and write the same bytes, so nothing downstream of them would rerun
    (the downstream stages are covered by the tiny `dvc repro` test above)."""
    params = _merge(_default_params(), TINY)
    params.update(student=STUDENT, grid=GRID, students=STUDENTS)
    params["ingest"]["scheduler"] = dask_cluster
    clone = _clone(tmp_path_factory.mktemp("cluster"), params)
    _run(["dvc", "repro", "teacher_infer"], clone)
    on_cluster = _outs(clone, ("ingest", "teacher_infer"))
    assert on_cluster and all(md5 for outs in on_cluster.values() for _, md5 in outs)
    params["ingest"]["scheduler"] = ""
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = set(RAN.findall(_run(["dvc", "repro", "teacher_infer"], clone).stdout))
    assert ran == {f"{s}@{src}" for s in ("ingest", "teacher_infer")
                   for src in ("real", "synthetic")}, ran
    assert _outs(clone, ("ingest", "teacher_infer")) == on_cluster
