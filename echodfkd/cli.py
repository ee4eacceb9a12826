"""What every stage script shares: reading the params it declares, and the entry point :func:`run`.

A stage reads its values from ``params.yaml`` itself (docs/design.md §6): the command in
dvc.yaml carries paths and names only, and the script asks :func:`read_params` for exactly the
keys its stage lists under ``params:`` (a section such as ``train``, or one key such as
``evaluate.split``). A section becomes a dataclass whose field names are the params keys
(:func:`as_config`); an unknown, missing or mistyped key is one error line that names
params.yaml, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml

from echodfkd.errors import InputError

PARAMS_FILE = "params.yaml"

C = TypeVar("C")


class ParamsError(InputError):
    """A value of params.yaml is missing, unknown or of the wrong type."""


class Params:
    """The values of the params keys one stage declares, read once from ``params.yaml``.

    ``params[key]`` returns the value at a dotted key (``"train"``, ``"evaluate.split"``,
    ``"grid.b4-l1-h2"``) that lies under one of the declared keys; any other key is refused,
    so that a stage cannot read a value DVC does not track for it.
    """

    def __init__(self, values: Mapping[str, Any], declared: Sequence[str], path: str):
        self._values = values
        self.declared = tuple(declared)
        self.path = path

    def __getitem__(self, key: str) -> Any:
        _trace(self.path, "read", key)
        if not any(key == d or key.startswith(d + ".") for d in self.declared):
            raise ParamsError(f"{self.path}: the stage reads {key!r} but declares only "
                              f"{list(self.declared)}: add {key!r} to its params: in dvc.yaml")
        node: Any = self._values
        walked = []
        for part in key.split("."):
            walked.append(part)
            if not isinstance(node, Mapping) or part not in node:
                raise ParamsError(f"{self.path}: {'.'.join(walked)} is missing: add it "
                                  f"(the README's params section lists every key)")
            node = node[part]
        return node

    def value(self, key: str, tp: Any) -> Any:
        """The value at ``key``, checked to be of type ``tp`` (as a dataclass field is)."""
        ok, value = _convert(tp, self[key])
        if not ok:
            raise ParamsError(f"{self.path}: {key} must be {_type_name(tp)}, got "
                              f"{self[key]!r}: fix it in {self.path}")
        return value

    def config(self, key: str, cls: type[C]) -> C:
        """The section at ``key`` as a ``cls`` dataclass (:func:`as_config`)."""
        return as_config(cls, self[key], key, self.path)


def read_params(declared: Sequence[str], path: str | Path = PARAMS_FILE) -> Params:
    """Read ``path`` (YAML) once and return a view limited to the ``declared`` keys."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: run the stage from the project root, "
                                f"where dvc.yaml and params.yaml are") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(values, Mapping):
        raise ParamsError(f"{path} must hold a mapping of sections, got "
                          f"{type(values).__name__}")
    for key in declared:
        _trace(path, "declared", key)
    return Params(values, declared, path)


def _trace(path: str, what: str, key: str) -> None:
    """With ``ECHODFKD_PARAMS_TRACE`` set to a file, append one JSON line per declared or read
    key with the command line, so a test can check every read against dvc.yaml's ``params:``."""
    trace = os.environ.get("ECHODFKD_PARAMS_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(json.dumps({"argv": sys.argv, "file": path, what: key}) + "\n")


def _type_name(tp: Any) -> str:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(tp) is list:
        return f"a list ({_type_name(args[0])} each)"
    if typing.get_origin(tp) is dict:
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(tp: Any, value: Any) -> tuple[bool, Any]:
    """(ok, value converted to ``tp``); ints pass for floats, nothing else is coerced."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _convert(arg, value)
            if ok:
                return True, out
        return False, None
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            return False, None
        pairs = [(_convert(key_tp, k), _convert(value_tp, v)) for k, v in value.items()]
        if not all(ok_k and ok_v for (ok_k, _), (ok_v, _) in pairs):
            return False, None
        return True, {k: v for (_, k), (_, v) in pairs}
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            return False, None
        converted = [_convert(item, v) for v in value]
        return all(ok for ok, _ in converted), [v for _, v in converted]
    if tp is type(None):
        return value is None, None
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"unsupported params field type {tp!r}")


def as_config(cls: type[C], section: Any, key: str, path: str = PARAMS_FILE) -> C:
    """Build dataclass ``cls`` from the mapping ``section`` read at ``key`` of ``path``.

    Keys must equal the field names: none missing, none unknown, each of the field's type
    (``int``, ``float`` (an int is accepted), ``bool``, ``str``, ``list[...]``, ``X | None``).
    The dataclass's own ``__post_init__`` then checks ranges and choices (the library
    validates each choice once). Raises :class:`ParamsError`, one line naming ``path`` and
    the key.
    """
    if not isinstance(section, Mapping):
        raise ParamsError(f"{path}: {key} must be a mapping of {cls.__name__} settings, got "
                          f"{section!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = [k for k in section if k not in names]
    if unknown:
        raise ParamsError(f"{path}: {key}.{unknown[0]} is not a setting of {key} (known: "
                          f"{', '.join(names)}): remove it or fix its spelling")
    missing = [n for n in names if n not in section]
    if missing:
        raise ParamsError(f"{path}: {key}.{missing[0]} is missing: add it to {key} "
                          f"({_type_name(hints[missing[0]])})")
    kwargs = {}
    for name in names:
        ok, value = _convert(hints[name], section[name])
        if not ok:
            raise ParamsError(f"{path}: {key}.{name} must be {_type_name(hints[name])}, got "
                              f"{section[name]!r}: fix it in {path}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except InputError as exc:
        raise ParamsError(f"{path}: {key}: {exc}") from None


def run(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> None:
    """Run a stage's ``main``: expected errors (:class:`InputError`, a missing file) end in one
    line on stderr and exit status 1; anything else is a bug and keeps its traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main(argv)
    except (InputError, FileNotFoundError) as e:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {text}", file=sys.stderr)
        raise SystemExit(1) from None
