"""The pipeline definition keeps DVC's promise: every stage lists the project modules its script
imports (directly or through other modules), stage commands appear once, every value a stage
reads comes from params.yaml on its command line, and library defaults agree with params.yaml."""

from __future__ import annotations

import ast
import copy
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
            used = imported_modules(ROOT / script)
            used |= {folder for folder, module in PACKAGE_DATA.items() if module in used}
            for f in sorted(used):
                if (ROOT / f).is_file() and (ROOT / f).stat().st_size == 0:
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


# Package data a module reads at run time: a stage importing the module depends on it too.
PACKAGE_DATA = {"echodfkd/evaluation/templates": "echodfkd/evaluation/html.py"}


def test_package_data_is_read_by_its_module():
    for folder, module in PACKAGE_DATA.items():
        assert (ROOT / folder).is_dir() and (ROOT / module).is_file()
        assert Path(folder).name in (ROOT / module).read_text()


def overdeclared(dvc: dict) -> list[tuple[str, str]]:
    """(stage, dep) pairs where a project-module dep (under echodfkd/) is imported by none of
    the stage's scripts: an edit to it would rerun the stage for nothing."""
    extra = []
    for name, body in stage_bodies(dvc).items():
        cmd = body["cmd"] if isinstance(body["cmd"], str) else " ".join(body["cmd"])
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        used = set()
        for script in set(re.findall(r"stages/\w+\.py", cmd)):
            used |= imported_modules(ROOT / script)
        used |= {folder for folder, module in PACKAGE_DATA.items() if module in used}
        for d in deps:
            if d.startswith("echodfkd/") and not any(
                    u == d or u.startswith(d.rstrip("/") + "/") for u in used):
                extra.append((name, d))
    return extra


def test_no_stage_lists_a_module_it_does_not_import(dvc):
    assert overdeclared(dvc) == []


def test_commands_carry_paths_and_names_only(dvc):
    """Short commands; the values a stage reads come from params.yaml, not its argv: the only
    interpolations are the foreach/matrix item and key (names, paths) and a source name."""
    for name, body in stage_bodies(dvc).items():
        cmd = body["cmd"]
        assert len(cmd) <= 300, f"{name}: command of {len(cmd)} characters"
        for ref in re.findall(r"\$\{([^}]+)\}", cmd):
            assert ref.split(".")[0] in ("item", "key") or ref == "teacher.fit_source", \
                f"{name}: ${{{ref}}} passes a value on the command line"


def stage_scripts(body: dict) -> list[Path]:
    return [ROOT / s for s in sorted(set(re.findall(r"stages/\w+\.py", body["cmd"])))]


def script_params(script: Path) -> tuple[str, ...]:
    """The literal ``PARAMS`` tuple a stage script declares (the keys it reads besides those
    its argv names)."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "PARAMS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def test_each_stage_declares_the_params_its_script_reads(dvc):
    """A stage goes stale exactly when a value it reads changes: what its script reads
    (``PARAMS``) is under its ``params:`` (the keys argv names are checked at run time, by
    the end-to-end test's trace)."""
    for name, body in stage_bodies(dvc).items():
        declared = [p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])]
        for script in stage_scripts(body):
            for key in script_params(script):
                assert any(key == d or key.startswith(d + ".") for d in declared), \
                    f"stage {name}: {script.name} reads {key!r}, not in its params {declared}"
            if script.name != "train.py":
                continue
            assert "${item}" in declared  # the --shape section


def test_library_has_no_defaults_competing_with_params():
    """A value params.yaml defines has no second home as a library default."""
    import inspect

    from echodfkd.data import echonet, ingest, store
    from echodfkd.data.phantom import generate_set
    from echodfkd.student import clips, train
    from echodfkd.student import infer as student_infer
    from echodfkd.student.model import ConvLSTMCell, StudentNet
    from echodfkd.teacher import build, fit, infer, model
    from echodfkd.teacher.unet import UNet

    filters = ("filter_column", "filter_min", "filter_max")
    checks = {
        store.init_frame_store: ("shard_frames", "chunk_frames"),
        store.create_frame_array: ("shard_frames", "chunk_frames"),
        store.init_mask_store: ("shard_frames", "chunk_frames"),
        ingest.ingest_source: ("shard_frames", "chunk_frames", "workers", "scheduler",
                               "max_bad_fraction", "tracing_policy"),
        ingest._Item: ("tracing_policy",),
        echonet.tracing_masks: ("policy",),
        student_infer.infer_store: ("chunk", "window", "warmup", "videos_per_batch", "device",
                                    "shard_frames", "chunk_frames"),
        student_infer.predict_videos: ("chunk", "window", "warmup"),
        student_infer.predict_video: ("chunk", "window", "warmup"),
        student_infer.predict_padded: ("chunk", "window", "warmup"),
        StudentNet: ("blocks", "layers_per_block", "hidden", "kernel_size", "skip"),
        ConvLSTMCell: ("kernel_size",),
        clips.select_videos: filters,
        clips.plan_videos: filters,
        clips.load_videos: filters,
        clips.parse_sources: ("what",),
        train.training_loss: ("loss", "dice_weight"),
        train.draw_augment: ("strength", "sharpen"),
        train.draw_spatial: ("strength",),
        train.augment_ranges: ("strength",),
        fit.fit_teacher: ("width", "depth", "epochs", "lr", "batch_size", "dice_weight",
                          "seed"),
        UNet: ("width", "depth"),
        build.make_teacher_dir: ("arch", "width", "depth", "epochs", "batch_size", "lr",
                                 "dice_weight", "seed", "device"),
        infer.infer_teacher: ("batch_size", "amp", "scheduler", "workers", "device"),
        model.load_teacher: ("device", "amp"),
        model.cached_teacher: ("device", "amp"),
        model.TeacherModel: ("amp",),
        model.TeacherModel.predict_proba: ("batch_size",),
        model.TeacherModel.predict_logits: ("batch_size",),
        generate_set: ("n_train", "n_val", "n_test", "n_extra", "n_frames"),
    }
    for fn, keys in checks.items():
        sig = inspect.signature(fn)
        for k in keys:
            assert k in sig.parameters, f"{fn.__qualname__} has no parameter {k!r}"
            assert sig.parameters[k].default is inspect.Parameter.empty, \
                f"{fn.__qualname__}({k}=...) competes with params.yaml"


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
