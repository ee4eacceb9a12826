"""The pipeline's own values for tests: params.yaml's sections as the library's dataclasses,
with a test's overrides (the library carries no defaults that compete with params.yaml)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import yaml

from echodfkd.cli import as_config

ROOT = Path(__file__).resolve().parents[1]


def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def section(key: str, cls, **over):
    """``params.yaml``'s section at dotted ``key`` as ``cls``, fields replaced by ``over``."""
    node = params()
    for part in key.split("."):
        node = node[part]
    return replace(as_config(cls, node, key, str(ROOT / "params.yaml")), **over)


def ingest(**over) -> dict:
    """The ``ingest`` section as keyword arguments of ``ingest_source`` (a new dict)."""
    from echodfkd.data.ingest import IngestConfig
    return asdict(section("ingest", IngestConfig, **over))


def recipe(**over):
    """The ``train`` section as a TrainConfig."""
    from echodfkd.student.train import TrainConfig
    return section("train", TrainConfig, **over)


def shape(**over):
    """The main ``student`` section as a StudentShape."""
    from echodfkd.student.shape import StudentShape
    return section("student", StudentShape, **over)


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` merged in, dicts recursively (a new dict)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_params(folder: Path, **over) -> Path:
    """Write ``<folder>/params.yaml``: the project's params with the sections of ``over``
    merged in (``train={"epochs": 1}`` changes one key). Returns its path."""
    path = Path(folder) / "params.yaml"
    path.write_text(yaml.safe_dump(merge(params(), over), sort_keys=False))
    return path
