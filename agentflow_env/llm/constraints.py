r"""What a completion must look like: :class:`Constraint`, the request field every engine honours.

A constraint is one of four kinds, each built by a constructor:

- ``Constraint.choice(["STOP", "CONTINUE"])``: exactly one of these strings;
- ``Constraint.regex(r"[0-9]{1,4}")``: the whole completion matches the regular expression
  (Rust ``regex`` syntax, anchored at both ends; :func:`regex_escape` quotes literal text);
- ``Constraint.json(schema)``: a JSON value valid under a JSON Schema (a dict, or a pydantic
  model class); bound strings with ``maxLength`` and arrays with ``maxItems``: a constraint fixes
  the format, not the length, and a small model can run out of ``max_tokens`` inside a field;
- ``Constraint.lark(grammar)``: a context-free grammar in the Lark syntax of llguidance
  (https://github.com/guidance-ai/llguidance/blob/main/docs/syntax.md): rules in lower case,
  terminals in upper case, ``"literal"`` strings (:func:`lark_literal` quotes any text),
  ``/regex/`` terminals, ``start`` as the top rule. It also embeds JSON schemas
  (``%json {...}``) and bounded free text.

Shapes of module outputs, as examples (tests/agentflow_env/test_constraints.py checks them)::

    CALL = Constraint.lark(r'''start: "execution = tool.execute(query=" STRING ")"
    STRING: /"([^"\\\n]|\\.){1,200}"/''')        # a Python string literal, escapes allowed
    VERDICT = Constraint.lark(r'''start: (RATIONALE "\n")? VERDICT
    RATIONALE: /[^\n]{1,200}/
    VERDICT: "STOP" | "CONTINUE"''')                 # an optional one-line rationale first
    ANSWER = Constraint.regex(r"(?s:.{0,300})<answer>[^<\n]{1,100}</answer>")

Beyond Lark, llguidance's dialect has terminal intersection and negation
(``CODE: /.../ & ~/(?s:.*FORBIDDEN.*)/``, used by the planner's action grammar): vLLM reads them
with its ``guidance`` backend only, SGLang with its ``llguidance`` grammar backend.

Engines enforce it (``hf``: token masks from llguidance; ``vllm``: vLLM's structured outputs;
``openai``: the server's structured-output parameters, checked on return; ``callable``: the
function's output is checked), or raise: none returns unconstrained text silently
(:mod:`agentflow_env.llm.structured` has the checks and the token masks).

A completion cut short by ``max_tokens`` (``finish_reason="length"``) or by a stop string is a
prefix of a matching text, not a whole one: size ``max_tokens`` to the longest output the
constraint allows. This module imports nothing heavy; compiling a constraint needs the
``structured`` extra (``pip install 'agentflow-gym[structured]'``, llguidance).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["Constraint", "ConstraintKind", "lark_literal", "regex_escape"]

ConstraintKind = Literal["choice", "regex", "json", "grammar"]

# Characters with a meaning in Rust regex syntax (regex::escape's set). Python's re.escape also
# escapes characters (a space, for one) whose escapes Rust rejects.
_REGEX_META = set("\\.+*?()|[]{}^$#&-~")


def regex_escape(text: str) -> str:
    """A regular expression that matches exactly ``text`` (Rust syntax, as llguidance, vLLM's
    backends and SGLang read it; Python's ``re`` reads it the same way)."""
    out = []
    for ch in text:
        if ch in _REGEX_META:
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif not ch.isprintable():  # forms both Rust and Python read
            code = ord(ch)
            out.append(
                f"\\x{code:02x}"
                if code < 0x100
                else f"\\u{code:04x}"
                if code < 0x10000
                else f"\\U{code:08x}"
            )
        else:
            out.append(ch)
    return "".join(out)


def lark_literal(text: str) -> str:
    """A Lark string literal that matches exactly ``text`` (quotes, backslashes, line breaks and
    any other character included)."""
    if not text:
        raise ValueError("a Lark literal cannot be empty (make the part optional instead)")
    # JSON escapes, all characters past ASCII too: llguidance's lexer refuses raw control
    # characters (DEL, for one) inside a literal
    return json.dumps(text, ensure_ascii=True)


class Constraint(BaseModel):
    """One constraint on a completion; build it with :meth:`choice`, :meth:`regex`,
    :meth:`json` or :meth:`lark` (the module docstring says what each means).

    Frozen and hashable (the JSON schema is kept as canonical JSON text), so compiled forms can
    be cached per constraint.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ConstraintKind
    choices: tuple[str, ...] | None = None
    """``choice``: the allowed completions"""
    pattern: str | None = None
    """``regex``: the regular expression"""
    json_schema: str | None = None
    """``json``: the JSON Schema as canonical JSON text (:attr:`schema_dict` parses it)"""
    grammar: str | None = None
    """``grammar``: the Lark grammar"""

    @model_validator(mode="after")
    def _one_value(self) -> Constraint:
        field = _FIELD[self.kind]
        others = [f for f in _FIELD.values() if f != field and getattr(self, f) is not None]
        if getattr(self, field) is None or others:
            raise ValueError(
                f"a {self.kind!r} constraint sets exactly {field!r} (got {others or 'none'}); "
                "build constraints with Constraint.choice/regex/json/lark"
            )
        if self.kind == "choice":
            choices = self.choices or ()
            if not choices or any(not isinstance(c, str) or not c for c in choices):
                raise ValueError("Constraint.choice needs one or more non-empty strings")
            if len(set(choices)) != len(choices):
                raise ValueError(f"Constraint.choice got duplicate options: {list(choices)}")
        elif self.kind == "json":
            schema = json.loads(self.json_schema or "null")
            if not isinstance(schema, (dict, bool)):
                raise ValueError(
                    f"a JSON schema is an object (or true/false), got {type(schema).__name__}"
                )
        elif self.kind == "regex" and not self.pattern:
            raise ValueError("a 'regex' constraint cannot be empty")
        elif self.kind == "grammar" and not (self.grammar or "").strip():
            raise ValueError("a 'grammar' constraint cannot be empty")
        return self

    # ------------------------------------------------------------------------ constructors
    @classmethod
    def choice(cls, options: Iterable[str]) -> Constraint:
        """The completion is exactly one of ``options`` (non-empty, distinct strings)."""
        if isinstance(options, str):
            raise TypeError("Constraint.choice takes a list of strings, not one string")
        return cls(kind="choice", choices=tuple(options))

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """The whole completion matches ``pattern`` (Rust regex syntax, anchored)."""
        return cls(kind="regex", pattern=pattern)

    @classmethod
    def json(cls, schema: Mapping[str, Any] | bool | type[BaseModel]) -> Constraint:
        """The completion is JSON valid under ``schema`` (a dict, or a pydantic model class)."""
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema = schema.model_json_schema()
        if not isinstance(schema, (Mapping, bool)):
            raise TypeError(
                f"Constraint.json takes a JSON schema (dict) or a pydantic model class, got "
                f"{type(schema).__name__}"
            )
        value = dict(schema) if isinstance(schema, Mapping) else schema
        return cls(kind="json", json_schema=json.dumps(value, sort_keys=True))

    @classmethod
    def lark(cls, grammar: str) -> Constraint:
        """The completion is a sentence of the Lark ``grammar`` (llguidance's dialect)."""
        return cls(kind="grammar", grammar=grammar)

    # ------------------------------------------------------------------------ views
    @property
    def schema_dict(self) -> dict[str, Any] | bool:
        """``json``: the schema as a Python value."""
        if self.kind != "json":
            raise AttributeError(f"a {self.kind!r} constraint has no JSON schema")
        return json.loads(self.json_schema or "null")  # type: ignore[no-any-return]

    @property
    def value(self) -> Any:
        """The kind's value: the choices (a list), the pattern, the schema (a dict) or the
        grammar."""
        if self.kind == "choice":
            return list(self.choices or ())
        if self.kind == "json":
            return self.schema_dict
        return getattr(self, _FIELD[self.kind])

    def describe(self, limit: int = 120) -> str:
        """A short description for error messages, e.g. ``choice ['STOP', 'CONTINUE']``."""
        shown = repr(self.value) if self.kind != "json" else (self.json_schema or "")
        if len(shown) > limit:
            shown = shown[: limit - 3] + "..."
        return f"{self.kind} {shown}"


_FIELD: dict[str, str] = {
    "choice": "choices",
    "regex": "pattern",
    "json": "json_schema",
    "grammar": "grammar",
}
