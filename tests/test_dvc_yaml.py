"""The pipeline definition keeps DVC's promise: every stage lists the project modules its script
imports (directly or through other modules), stage commands appear once, every value a stage
reads comes from params.yaml on its command line, and library defaults agree with params.yaml."""

from __future__ import annotations

import ast
import copy
import inspect
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """``echodfkd.x.y`` -> the file that defines it (module or package ``__init__``)."""
    p = ROOT / name.replace(".", "/")
    for cand in (p.with_suffix(".py"), p / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imported_modules(script: Path) -> set[str]:
    """Project files (relative paths) that ``script`` imports, transitively, including imports
    inside functions and the ``__init__`` of every package on the way."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = path.parent.relative_to(ROOT).as_posix().replace("/", ".")
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                if n.split(".")[0] != "echodfkd":
                    continue
                parts = n.split(".")
                for k in range(1, len(parts) + 1):  # every package on the way
                    f = module_file(".".join(parts[:k]))
                    if f is not None:
                        todo.append(f)
    return {p.relative_to(ROOT).as_posix() for p in seen if p != script}


def stage_bodies(dvc: dict) -> dict[str, dict]:
    return {name: st.get("do", st) for name, st in dvc["stages"].items()}


def undeclared(dvc: dict) -> list[tuple[str, str]]:
    """(stage, module file) pairs where a stage's scripts import a project module (non-empty
    file) that neither it nor a folder above it is among the stage's deps."""
    missing = []
    for name, body in stage_bodies(dvc).items():
        cmd = body["cmd"] if isinstance(body["cmd"], str) else " ".join(body["cmd"])
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        for script in sorted(set(re.findall(r"stages/\w+\.py", cmd))):
            assert script in deps, f"stage {name}: script {script} is not a dep"
            for f in sorted(imported_modules(ROOT / script)):
                if (ROOT / f).stat().st_size == 0:
                    continue
                if not any(f == d.rstrip("/") or f.startswith(d.rstrip("/") + "/")
                           for d in deps):
                    missing.append((name, f))
    return missing


@pytest.fixture(scope="module")
def dvc() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_every_stage_lists_every_module_it_imports(dvc):
    assert undeclared(dvc) == []


def test_the_check_fails_when_a_dep_is_removed(dvc):
    broken = copy.deepcopy(dvc)
    deps = broken["stages"]["infer"]["deps"]
    deps.remove("echodfkd/data/store.py")
    assert ("infer", "echodfkd/data/store.py") in undeclared(broken)
    # store.py is imported by the stage only through other modules: the walk is transitive
    assert "echodfkd/data/store.py" not in (ROOT / "stages/infer.py").read_text()


def test_the_walk_follows_packages_and_function_level_imports():
    mods = imported_modules(ROOT / "stages/teacher.py")
    assert {"echodfkd/teacher/__init__.py", "echodfkd/teacher/build.py",
            "echodfkd/teacher/fit.py", "echodfkd/overlap.py"} <= mods
    # the evaluation metrics are not part of the teacher: editing them does not refit it
    assert "echodfkd/evaluation/metrics.py" not in mods
    # inference never imports the fitting code
    assert "echodfkd/teacher/fit.py" not in imported_modules(ROOT / "stages/teacher_infer.py")


def test_each_stage_command_appears_once():
    text = (ROOT / "dvc.yaml").read_text()
    for script in sorted(p.name for p in (ROOT / "stages").glob("*.py")):
        assert text.count(f"stages/{script}") == 2, script  # once in cmd, once in deps


def add_argument_calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            yield node


@pytest.mark.parametrize("script", sorted((ROOT / "stages").glob("*.py")), ids=lambda p: p.name)
def test_stage_options_are_required_without_defaults(script):
    """One home per value: a stage option has no argparse default competing with params.yaml."""
    for call in add_argument_calls(script):
        kw = {k.arg: k.value for k in call.keywords}
        flags = [a.value for a in call.args if isinstance(a, ast.Constant)]
        if not any(isinstance(f, str) and f.startswith("--") for f in flags) or "action" in kw:
            continue  # positional, or a UI switch such as --no-progress (not a pipeline value)
        assert "default" not in kw, f"{script.name} {flags}: has a default"
        req = kw.get("required")
        assert isinstance(req, ast.Constant) and req.value is True, \
            f"{script.name} {flags}: not required"


def test_stage_values_come_from_params(dvc, params):
    """Every ${...} in dvc.yaml names a key of params.yaml (or the foreach/matrix item)."""
    text = (ROOT / "dvc.yaml").read_text()
    for ref in set(re.findall(r"\$\{([^}]+)\}", text)):
        if ref.split(".")[0] in ("item", "key"):
            continue
        node = params
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"${{{ref}}} is not in params.yaml"
            node = node[part]


def defaults_of(obj) -> dict:
    return {n: p.default for n, p in inspect.signature(obj).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_library_defaults_agree_with_params(params):
    """Library defaults that remain (for library users and tests) are the pipeline's values."""
    from echodfkd.data import store
    from echodfkd.student import infer as student_infer
    from echodfkd.student.model import StudentNet
    from echodfkd.teacher import fit, infer
    from echodfkd.student.train import TrainConfig

    main = params["students"]["student"]
    tr = params["train"]
    cfg = TrainConfig()
    for k in ("blocks", "layers_per_block", "hidden", "kernel_size", "skip"):
        assert getattr(cfg, k) == main[k], k
    for k in ("sequence_length", "lr", "epochs", "patience", "half_resolution", "augment",
              "val_clips_per_video", "short_videos", "augment_strength", "sharpen", "loss",
              "dice_weight", "lr_schedule", "burn_in", "ema"):
        assert getattr(cfg, k) == tr[k], k
    assert cfg.batch_size == tr["batch"]
    assert cfg.steps_per_epoch == (tr["steps_per_epoch"] or None)
    assert cfg.seed == params["seed"]
    from echodfkd.student.train import LoaderConfig
    loader = LoaderConfig()
    assert (loader.cache_mb, loader.workers, loader.stream_above_mb, loader.amp) == (
        tr["cache_mb"], tr["loader_workers"], tr["stream_above_mb"], tr["amp"])
    net = defaults_of(StudentNet)
    for k in ("blocks", "layers_per_block", "hidden", "kernel_size", "skip"):
        if k in net:
            assert net[k] == main[k], f"StudentNet {k}"
    ing = params["ingest"]
    for fn in (store.init_frame_store, store.create_frame_array, store.init_mask_store,
               student_infer.infer_store):
        d = defaults_of(fn)
        for k in ("shard_frames", "chunk_frames"):
            if k in d:
                assert d[k] == ing[k], f"{fn.__qualname__} {k}"
    t = params["teacher"]
    d = defaults_of(fit.fit_teacher)
    for k in ("width", "depth", "epochs", "lr"):
        if k in d:
            assert d[k] == t[k], f"fit_teacher {k}"
    if "batch_size" in d:
        assert d["batch_size"] == t["batch"]
    d = defaults_of(infer.infer_teacher)
    assert d.get("batch_size", t["infer_batch"]) == t["infer_batch"]
    assert "amp" not in d or d["amp"] == t["amp"]
    d = defaults_of(student_infer.infer_store)
    assert d.get("chunk", params["infer"]["chunk"]) == params["infer"]["chunk"]


def test_lock_holds_only_current_stages():
    """dvc.lock keeps no entry of a stage that dvc.yaml no longer defines (e.g. an old grid)."""
    import subprocess
    import sys

    dvc = Path(sys.executable).parent / "dvc"
    out = subprocess.run([str(dvc) if dvc.exists() else "dvc", "stage", "list", "--name-only"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    names = set(out.split())
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    assert set(lock["stages"]) <= names, sorted(set(lock["stages"]) - names)
