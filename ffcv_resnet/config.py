"""Config: dataclasses are the one source of defaults; fastargs declares and parses them at the edge.

A script's settings are a frozen dataclass whose fields are its sections (frozen dataclasses of
options, each declared with `option`); `parse` returns one, checked, and nothing changes it after:
a resolved value (an `auto` made concrete) is a new object (`dataclasses.replace`).

Parsing is strict where fastargs is lax: booleans accept only true/false/yes/no/1/0, unknown CLI
options and YAML keys are errors, environment variables are ignored, and a bad value raises
ConfigError (one line, non-zero exit) instead of fastargs' exit status 0.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from fastargs import Config, Param, Section
from fastargs.validation import Checker

from .errors import UserError


class ConfigError(UserError):
    """A bad option, value or config file."""

    shared = True  # every process of a torchrun run parses the same command line


def require(ok: bool, option: str, value: Any, expected: str) -> None:
    """ConfigError 'bad value V for --OPTION (expected ...)' unless `ok`."""
    if not ok:
        raise ConfigError(f"bad value {value!r} for --{option} (expected {expected})")


def require_range(prefix: str, obj: Any, name: str, low: float, high: float = math.inf,
                  high_open: bool = False, low_open: bool = False) -> None:
    """The field `name` of `obj` is a finite number in [low, high] (ends open when asked)."""
    v = getattr(obj, name)
    ok = math.isfinite(v) and (v > low if low_open else v >= low) and (
        v < high if high_open else v <= high)
    lo = f"> {low}" if low_open else f">= {low}"
    hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high}"
    kind = "an integer" if isinstance(v, int) else "a finite number"
    require(ok, f"{prefix}.{name}", v, f"{kind} {lo}{hi}")


S = TypeVar("S")


def option(default: Any, desc: str, choices: Sequence[str] | None = None,
           resumable: bool = False, many: bool = False, positional: str = "",
           aliases: dict[str, str] | None = None) -> Any:
    """A dataclass field with the help text and allowed values the CLI shows. `resumable`: a
    resumed run may set it anew (where and how it runs, never what it computes). `many`: the
    option takes one or more values (`--compare.a RUN RUN ...`), parsed into a tuple of str.
    `positional`: the field (a tuple) takes the command line's positional arguments, shown under
    this name (`scripts/predict.py ... IMAGE ...`), instead of an option. `aliases`: other
    words a choice option still reads (an old boolean's true/false), each standing for a choice."""
    return dataclasses.field(default=default, metadata={"desc": desc, "choices": choices,
                                                        "resumable": resumable, "many": many,
                                                        "positional": positional,
                                                        "aliases": aliases or {}})


def sections(settings: type) -> dict[str, type]:
    """{section name: its dataclass} of a settings class."""
    hints = typing.get_type_hints(settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(settings)}


def resumable(settings: type) -> set[str]:
    """The "section.name" keys of the options declared resumable."""
    return {f"{name}.{f.name}" for name, cls in sections(settings).items()
            for f in dataclasses.fields(cls) if f.metadata.get("resumable")}


class _Strict(Checker):
    def __init__(self, kind: type, choices: Sequence[str] | None = None,
                 aliases: dict[str, str] | None = None):
        self.kind, self.choices, self.aliases = kind, choices, aliases or {}

    def check(self, value: Any) -> Any:
        if self.kind is tuple:
            values = [value] if isinstance(value, str) else list(value)
            if values == [""]:  # `--x ''`: none
                return ()
            if not all(isinstance(v, str) and v.strip() for v in values):
                raise ValueError(value)
            return tuple(values)  # none given: the caller says what is missing
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
            return words[str(value).strip().lower()]  # KeyError -> ValidationError
        if self.kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if self.kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        value = str(value)
        if value.strip().lower() in self.aliases:  # YAML reads `true` as a bool: str() -> True
            return self.aliases[value.strip().lower()]
        if self.choices and value not in self.choices:
            raise ValueError(value)
        return value

    def help(self) -> str:
        if self.choices:
            return "one of " + "|".join(self.choices)
        return {bool: "true|false", int: "int", float: "float", tuple: "str"}.get(self.kind,
                                                                                 "str")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (ConfigError) instead of usage text."""

    def error(self, message: str):
        raise ConfigError(f"{message} (--help lists every option)")


def _declare(settings: type) -> Config:
    config = Config()  # a fresh one, not fastargs' global
    for name, cls in sections(settings).items():
        params = {}
        for f in dataclasses.fields(cls):
            type_name = f.type if isinstance(f.type, str) else f.type.__name__
            kind = {"bool": bool, "int": int, "float": float, "tuple": tuple}.get(type_name, str)
            params[f.name] = Param(_Strict(kind, f.metadata.get("choices"),
                                           f.metadata.get("aliases")),
                                   f.metadata.get("desc", ""), default=f.default)
        Section(name, (cls.__doc__ or name).strip(), config_descriptor=config).params(**params)
    return config


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}{key}."))
    return {k.rstrip("."): v for k, v in out.items()}


def _read_yaml(path: str, known: set[str]) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read config ({str(e).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    flat = _flatten(tree)
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown option '{unknown[0]}'")
    empty = sorted(k for k, v in flat.items() if v is None or v == {})
    if empty:
        raise ConfigError(f"{path}: no value for '{empty[0]}'")
    return flat


def flatten(tree: dict[str, dict]) -> dict[str, Any]:
    """{section: {name: value}} -> {"section.name": value}."""
    return _flatten(tree)


def parse(settings: type[S], argv: Sequence[str] | None = None,
          description: str = "", base: dict[str, Any] | None = None) -> S:
    """Command line (+ YAML files given with -C) -> a checked `settings` instance.

    `base` ({"section.name": value}) comes first: YAML files and the command line override it.
    """
    config = _declare(settings)
    parser = _Parser(description=description, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-C", "--config-file", action="append", default=[],
                        help="YAML recipe (repeatable; later files and the command line win)")
    positional = {f"{name}.{f.name}": f.metadata["positional"]
                  for name, cls in sections(settings).items() for f in dataclasses.fields(cls)
                  if f.metadata.get("positional")}
    for path, param in config.entries.items():
        name = ".".join(path)
        if name in positional:
            parser.add_argument(name, nargs="*", metavar=positional[name], help=param.desc)
            continue
        many = {"nargs": "+"} if param.checker.kind is tuple else {}
        parser.add_argument(f"--{name}", dest=name, default=None, metavar=param.checker.help(),
                            help=f"{param.desc} (default: {param.default!r})", **many)
    args = vars(parser.parse_args(argv))  # unknown options: argparse exits with status 2
    for name in positional:  # none given: the field's default
        args[name] = args[name] or None
    known = {".".join(p) for p in config.entries}
    if base:
        config.collect({k: v for k, v in base.items() if k in known})
    for path in args.pop("config_file"):
        config.collect(_read_yaml(path, known))
    config.collect({k: v for k, v in args.items() if v is not None})
    errors = config.validate(mode="errordict")
    if errors:
        path = next(iter(errors))
        raise ConfigError(f"bad value {config.content.get(path)!r} for --{'.'.join(path)} "
                          f"(expected {config.entries[path].checker.help()})")
    parsed = {name: cls(**{f.name: config[(name, f.name)] for f in dataclasses.fields(cls)})
              for name, cls in sections(settings).items()}
    for name, value in parsed.items():  # ranges and cross-checks, before any work is done
        if hasattr(value, "validate"):
            value.validate(name)
    return settings(**parsed)


def as_dict(settings: Any) -> dict[str, dict]:
    """Settings as plain nested dicts {section: {name: value}} (for the run folder)."""
    return dataclasses.asdict(settings)
