"""Config machinery every learner shares: field docs as ``--help``, overrides, typed errors.

A config is a tree of *sections*: dataclasses whose fields carry a docstring (the string literal
under the field, cleanrl style) or pydantic models whose fields do (``use_attribute_docstrings``;
e.g. the env section, which is :class:`agentflow_env.config.EnvConfig` extended). The same code
turns both into command-line flags (:func:`add_arguments`), applies values from a JSON/TOML file
or the command line (:func:`apply_overrides`, unknown keys raise naming the key) and writes them
back as JSON (:func:`to_dict`). Shipped checkpoints are named ``asset:NAME``
(:func:`resolve_model_path`).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ValidationError

__all__ = [
    "ASSETS_DIR",
    "ConfigError",
    "ConfigField",
    "add_arguments",
    "apply_overrides",
    "coerce",
    "config_fields",
    "field_docs",
    "load_config_file",
    "resolve_model_path",
    "to_dict",
]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
"""where shipped checkpoints live (``asset:NAME`` model paths resolve here)"""

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ConfigError(ValueError):
    """A configuration value is invalid; the message says how to fix it."""


def resolve_model_path(name_or_path: str) -> str:
    """``asset:NAME`` -> the shipped checkpoint directory; anything else unchanged."""
    if name_or_path.startswith("asset:"):
        return str(ASSETS_DIR / name_or_path.removeprefix("asset:"))
    return name_or_path


# ------------------------------------------------------------------------------- sections
def _is_section(obj: Any) -> bool:
    cls = obj if isinstance(obj, type) else type(obj)
    return dataclasses.is_dataclass(cls) or issubclass(cls, BaseModel)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written under it (cleanrl-style attribute docs)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


@dataclass(frozen=True)
class ConfigField:
    """One field of a section, as files and flags see it."""

    name: str
    """attribute name"""
    key: str
    """name in config files and flags (a pydantic alias where the model has one)"""
    hint: Any
    """its type"""
    doc: str
    """its one-line documentation (the --help text)"""
    section: type | None
    """the section class when the field is a nested section"""


@cache
def config_fields(cls: type) -> tuple[ConfigField, ...]:
    """The fields of a section class (dataclass or pydantic model), in declaration order."""
    if issubclass(cls, BaseModel):
        return tuple(
            ConfigField(
                name,
                info.alias or name,
                info.annotation,
                " ".join((info.description or "").split()),
                info.annotation if _is_section(info.annotation) else None,  # type: ignore[arg-type]
            )
            for name, info in cls.model_fields.items()
        )
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    return tuple(
        ConfigField(
            f.name,
            f.name,
            hints[f.name],
            docs.get(f.name, ""),
            hints[f.name] if _is_section(hints[f.name]) else None,
        )
        for f in dataclasses.fields(cls)
    )


def _members(hint: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated, possibly union) type."""
    if typing.get_origin(hint) is typing.Annotated:
        return _members(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(hint) for m in _members(arg)]
    return [hint]


def _literals(hint: Any) -> list[Any]:
    members = _members(hint)
    return [v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)]


def _is_kind(member: Any, *kinds: type) -> bool:
    cls = typing.get_origin(member) or member
    return isinstance(cls, type) and issubclass(cls, kinds)


def has_text_form(hint: Any) -> bool:
    """Whether a value of this type can be written on a command line."""
    members = _members(hint)
    return bool(_literals(hint)) or any(
        _is_kind(m, str, Path, bool, int, float, Sequence, Mapping) for m in members
    )


# --------------------------------------------------------------------------------- values
def coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert a file/CLI value to a dataclass field's type, or raise ConfigError naming it."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], name)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r} is not one of {list(args)}")
        return value
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in _BOOL_WORDS:
                    raise ValueError(value)
                return _BOOL_WORDS[value.lower()]
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if origin is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(v).strip() for v in items if str(v).strip())
        if origin is dict or hint is dict:
            return json.loads(value) if isinstance(value, str) else dict(value)
    except (TypeError, ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{name}={value!r} is not a valid {getattr(hint, '__name__', hint)}: {exc}"
        ) from exc
    raise ConfigError(f"{name}: unsupported field type {hint}")


def _from_text(text: str, hint: Any, name: str) -> Any:
    """A command-line string as a value for a pydantic field (which then validates it)."""
    members = _members(hint)
    if type(None) in members and text.lower() in ("none", "null"):
        return None
    if text in _literals(hint):
        return text
    if bool in members and text.lower() in _BOOL_WORDS:
        return _BOOL_WORDS[text.lower()]
    if any(_is_kind(m, str, Path) for m in members):
        return text
    try:
        if any(_is_kind(m, Mapping) for m in members) or text.lstrip().startswith("["):
            return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name}={text!r} is not valid JSON: {exc}") from exc
    if any(_is_kind(m, Sequence) for m in members):
        return [item.strip() for item in text.split(",") if item.strip()]
    return text  # numbers: pydantic parses them


def _model_error(exc: ValidationError, name: str) -> ConfigError:
    problems = []
    for error in exc.errors():
        if error["type"] == "value_error":
            problems.append(f"{name}: {error['ctx']['error']}")
        else:
            problems.append(f"{name}: {error['msg']} (got {error['input']!r})")
    return ConfigError("; ".join(problems))


def apply_overrides(cfg: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Set nested fields from a (possibly nested, possibly dotted) dict; unknown keys raise."""
    fields = config_fields(type(cfg))
    by_key = {f.key: f for f in fields} | {f.name: f for f in fields}
    for key, value in values.items():
        head, _, rest = key.replace("-", "_").partition(".")
        full = f"{prefix}{head}"
        spec = by_key.get(head)
        if spec is None:
            known = sorted(f.key for f in fields)
            raise ConfigError(f"unknown config field {full!r}; known: {known}")
        if spec.section is not None:
            sub = {rest: value} if rest else value
            if not isinstance(sub, Mapping):
                raise ConfigError(f"{full} is a section; give its fields, e.g. {full}.<field>=...")
            apply_overrides(getattr(cfg, spec.name), sub, prefix=f"{full}.")
        elif rest:
            raise ConfigError(f"{full} is not a section")
        elif isinstance(cfg, BaseModel):  # validate_assignment: pydantic checks the value
            new = _from_text(value, spec.hint, full) if isinstance(value, str) else value
            try:
                setattr(cfg, spec.name, new)
            except ValidationError as exc:
                raise _model_error(exc, full) from exc
        else:
            setattr(cfg, spec.name, coerce(value, spec.hint, full))
    return cfg


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a nested dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text()
    try:
        return tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot parse {p}: {exc}") from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """A section as plain JSON-ready data, keyed as files are (objects become their repr)."""
    if isinstance(cfg, BaseModel):
        return cfg.model_dump(mode="json", by_alias=True, fallback=repr)
    out: dict[str, Any] = {}
    for f in config_fields(type(cfg)):
        value = getattr(cfg, f.name)
        out[f.key] = to_dict(value) if _is_section(value) else copy.deepcopy(value)
    return out


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: Any, cls: type, prefix: str = "", skip: Sequence[str] = ()) -> None:
    """One ``--section.field`` flag per field with a text form; its help is the field's doc."""
    for f in config_fields(cls):
        if f.section is not None:
            title = f"{f.name} ({(f.section.__doc__ or '').strip().splitlines()[0]})"
            add_arguments(parser.add_argument_group(title), f.section, f"{prefix}{f.key}.")
            continue
        if (not prefix and f.name in skip) or not has_text_form(f.hint):
            continue
        kwargs: dict[str, Any] = {
            "dest": prefix + f.key,
            "default": argparse.SUPPRESS,
            "help": f.doc,
        }
        choices = _literals(f.hint)
        if choices and all(isinstance(c, str) for c in choices):
            kwargs["choices"] = choices
        elif f.hint is bool or _members(f.hint) == [bool]:
            kwargs["metavar"] = "{true,false}"
        elif _members(f.hint) == [bool, type(None)]:
            kwargs["metavar"] = "{true,false,none}"
        else:
            kwargs["metavar"] = f.hint.__name__.upper() if isinstance(f.hint, type) else "VALUE"
        parser.add_argument("--" + (prefix + f.key).replace("_", "-"), **kwargs)
