"""Stages read their own params: a section maps onto its dataclass by field name, and every bad
key is one line naming params.yaml, the key and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from echodfkd.cli import ParamsError, as_config, read_params, run
from echodfkd.student.shape import StudentShape

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Recipe:
    lr: float
    epochs: int
    augment: bool
    loss: str
    filter_min: float | None
    splits: list[str]


GOOD = {"lr": 0.003, "epochs": 12, "augment": True, "loss": "bce", "filter_min": None,
        "splits": ["TEST", "VAL"]}


def write(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_a_section_maps_onto_its_dataclass_by_field_name(tmp_path):
    params = read_params(["train"], write(tmp_path, {"train": {**GOOD, "lr": 1}}))
    cfg = params.config("train", Recipe)
    assert cfg == Recipe(1.0, 12, True, "bce", None, ["TEST", "VAL"])
    assert isinstance(cfg.lr, float)  # an int is a number; nothing else is coerced


@pytest.mark.parametrize("change, words", [
    ({"lr": "fast"}, ["train.lr must be a number, got 'fast'"]),
    ({"epochs": 2.5}, ["train.epochs must be an integer, got 2.5"]),
    ({"epochs": True}, ["train.epochs must be an integer, got True"]),
    ({"augment": "yes"}, ["train.augment must be true or false, got 'yes'"]),
    ({"filter_min": "low"}, ["train.filter_min must be a number or null, got 'low'"]),
    ({"splits": "TEST"}, ["train.splits must be a list (a string each), got 'TEST'"]),
    ({"lrr": 0.1}, ["train.lrr is not a setting of train", "remove it or fix its spelling"]),
])
def test_a_bad_key_is_one_line_naming_params_yaml_and_the_key(tmp_path, change, words):
    path = write(tmp_path, {"train": {**GOOD, **change}})
    with pytest.raises(ParamsError) as e:
        read_params(["train"], path).config("train", Recipe)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    for w in words:
        assert w in text


def test_a_missing_key_names_it_and_its_type(tmp_path):
    values = dict(GOOD)
    del values["epochs"]
    with pytest.raises(ParamsError, match=r"train\.epochs is missing: add it to train "
                                          r"\(an integer\)"):
        read_params(["train"], write(tmp_path, {"train": values})).config("train", Recipe)
    with pytest.raises(ParamsError, match=r"evaluate is missing"):
        read_params(["evaluate"], write(tmp_path, {"train": GOOD}))["evaluate"]


def test_a_stage_cannot_read_what_it_does_not_declare(tmp_path):
    params = read_params(["train.lr", "seed"], write(tmp_path, {"train": GOOD, "seed": 3}))
    assert params["train.lr"] == 0.003 and params.value("seed", int) == 3
    with pytest.raises(ParamsError, match=r"reads 'train.epochs' but declares only "
                                          r"\['train.lr', 'seed'\]: add 'train.epochs' to its "
                                          r"params: in dvc.yaml"):
        params["train.epochs"]
    with pytest.raises(ParamsError, match=r"seed must be an integer, got 3.5"):
        read_params(["seed"], write(tmp_path, {"seed": 3.5})).value("seed", int)


def test_a_student_row_with_zero_blocks_names_the_row(tmp_path):
    row = {"blocks": 0, "layers_per_block": 1, "hidden": 2, "kernel_size": 3, "skip": False}
    path = write(tmp_path, {"grid": {"b0-l1-h2": row}})
    with pytest.raises(ParamsError, match=r"grid\.b0-l1-h2: blocks must be >= 1, got 0"):
        read_params(["grid"], path).config("grid.b0-l1-h2", StudentShape)
    with pytest.raises(ParamsError, match=r"kernel_size must be odd, got 4"):
        as_config(StudentShape, {**row, "blocks": 2, "kernel_size": 4}, "student")


def test_params_yaml_holds_every_stage_section_as_its_dataclass():
    """The real params.yaml builds every dataclass a stage reads (keys == fields)."""
    from echodfkd.data.ingest import IngestConfig
    from echodfkd.data.phantom import PhantomSet
    from echodfkd.evaluation.evaluate import EvaluateConfig
    from echodfkd.student.infer import InferConfig
    from echodfkd.student.train import TrainConfig
    from echodfkd.teacher.build import TeacherConfig
    from echodfkd.teacher.infer import TeacherInferConfig

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = read_params(list(raw), ROOT / "params.yaml")
    for key, cls in (("ingest", IngestConfig), ("train", TrainConfig), ("infer", InferConfig),
                     ("evaluate", EvaluateConfig), ("teacher", TeacherConfig),
                     ("teacher_infer", TeacherInferConfig)):
        params.config(key, cls)
    for name in raw["phantom"]:
        params.config(f"phantom.{name}", PhantomSet)
    for name, section in params.value("students", dict[str, str]).items():
        params.config(section, StudentShape)
    assert raw["students"]["student"] == "student"  # `dvc exp run -S student.hidden=16`


def test_run_turns_a_params_error_into_one_line(tmp_path, capsys):
    def main(argv):
        read_params(["train"], write(tmp_path, {"train": {**GOOD, "lr": "x"}})).config(
            "train", Recipe)

    with pytest.raises(SystemExit) as e:
        run(main, [])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "train.lr must be a number, got 'x'" in err
    assert len(err.splitlines()) == 1
