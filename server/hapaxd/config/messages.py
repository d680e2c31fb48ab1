"""How a bad config is told: ConfigError, pydantic's errors rewritten as one line per problem
naming the exact key (`providers[1].base_url: not a URL`), and the cross-field checks
(`reference_problems`), written on plain values so they also judge a file whose other keys are bad.

Imports pydantic only, nothing of the schema, so the schema's validators can call in here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, PydanticCustomError


class ConfigError(Exception):
    """A config that cannot be served; the message names each bad key and why, one per line."""


# --- one pydantic error -> one line ------------------------------------------------------------

_KEY_PROBLEM = "key_problem"
# Pydantic's wording replaced by ours, by error type.
_WORDS = {"extra_forbidden": "unknown key", "missing": "required"}
# Error types whose message is the text of the exception a check raised.
_RAISED = ("value_error", "assertion_error")
# Pydantic names the branch of a union a value failed in its loc; those are not config keys.
_UNION_BRANCHES = ("str", "list[str]")
_UNION_BRANCH_PREFIXES = ("function-", "constrained-")


def key_problem(key: str, why: str) -> PydanticCustomError:
    """The error a section's own check raises about one of the section's keys, so the line names
    that key (`providers[0].base_url: ...`) rather than the section."""
    return PydanticCustomError(_KEY_PROBLEM, "{key}: {why}", {"key": key, "why": why})


def key_of(loc: Sequence[int | str]) -> str:
    """A pydantic location as the config writes it: `providers[1].timeouts.connect`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_BRANCHES or part.startswith(_UNION_BRANCH_PREFIXES):
            continue
        else:
            out += f".{part}" if out else part
    return out


def describe(error: ErrorDetails) -> str:
    """One error as `key: why`. A model-level check (no key) is its own text: lines that already
    name their keys."""
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx", {})
    if kind == _KEY_PROBLEM:
        loc, message = (*loc, ctx["key"]), str(ctx["why"])
    elif kind in _WORDS:
        message = _WORDS[kind]
    elif kind in _RAISED:
        message = str(ctx["error"])  # the msg is the same text behind "Value error, "
    else:
        message = error["msg"]
    key = key_of(loc)
    return f"{key}: {message}" if key else message


def validation_problems(
    exc: ValidationError, data: Mapping[str, Any], unexpanded: Collection[str]
) -> list[str]:
    """A line per problem pydantic found in `data` (the expanded file), plus the cross-field
    checks when a bad field kept Settings' own check from running. A key whose ${VAR} is unset
    (`unexpanded`) is reported once, as that, elsewhere; not again here as a bad value."""
    errors = exc.errors()
    found = [line for e in errors for line in describe(e).splitlines()]
    if all(e["loc"] for e in errors):  # a field failed, so Settings' own checks never ran
        found += _raw_reference_problems(data)
    return [line for line in dict.fromkeys(found) if not _under(line, unexpanded)]


def _under(line: str, keys: Collection[str]) -> bool:
    return any(line.startswith((f"{k}:", f"{k}.", f"{k}[")) for k in keys)


# --- the cross-field checks --------------------------------------------------------------------


def _entries(order: Sequence[Any]) -> Iterator[tuple[str, str]]:
    """(index suffix, provider name) of a preference list; an inner list is one rank. Entries
    that are not names are skipped: the schema reports them."""
    for i, entry in enumerate(order):
        if isinstance(entry, list):
            yield from ((f"[{i}][{j}]", n) for j, n in enumerate(entry) if isinstance(n, str))
        elif isinstance(entry, str):
            yield f"[{i}]", entry


def reference_problems(
    providers: Sequence[tuple[str | None, Collection[Any] | None]],
    preference: Sequence[Any] | None,
    overrides: Mapping[str, Sequence[Any] | None],
    default_model: str | None,
) -> list[str]:
    """The cross-field checks, one line per problem, on plain values so they also run on a file
    whose other keys are bad. `providers` is (name, logical models it maps) in file order; None
    for what could not be read, and a provider whose models are unknown is taken to serve all.

    Provider names are unique; every name in a preference list is a provider that serves the
    model(s) that list routes; something serves the default model.
    """
    problems: list[str] = []
    models_of: dict[str, Collection[Any] | None] = {}
    for i, (name, models) in enumerate(providers):
        if name is None:
            continue
        if name in models_of:
            problems.append(f"providers[{i}].name: duplicate provider name {name!r}")
        else:
            models_of[name] = models

    def serves(name: str, *wanted: str) -> bool:
        """Whether the provider maps any of the wanted models (a "*" maps every name)."""
        models = models_of[name]
        return models is None or "*" in models or any(m in models for m in wanted)

    own_list = {m for m, order in overrides.items() if order}
    declared = {m for models in models_of.values() for m in models or () if isinstance(m, str)}
    declared |= set(overrides) | ({default_model} if default_model else set())
    # The global list routes every logical model without a list of its own (and, through a "*"
    # mapping, names no one declared).
    routed = sorted(declared - own_list - {"*"})
    for key, name in _entries(preference or []):
        where = f"provider_preference{key}"
        if name not in models_of:
            problems.append(f"{where}: unknown provider {name!r}")
        elif not serves(name, *routed):
            models = ", ".join(routed) if routed else "none: each model has its own list"
            problems.append(
                f"{where}: provider {name!r} serves none of the models this list routes ({models})"
            )
    for model, order in overrides.items():
        for key, name in _entries(order or []):
            where = f"models.{model}.provider_preference{key}"
            if name not in models_of:
                problems.append(f"{where}: unknown provider {name!r}")
            elif not serves(name, model):
                problems.append(f"{where}: provider {name!r} does not serve model {model!r}")
    if default_model:
        order = overrides.get(default_model) or preference or list(models_of)
        if not any(n in models_of and serves(n, default_model) for _, n in _entries(order)):
            problems.append(f"default_model: no provider serves {default_model!r}")
    return problems


def _raw_reference_problems(data: Mapping[str, Any]) -> list[str]:
    """reference_problems() on the expanded file, read leniently, for when Settings could not be
    built because other keys are bad (so its validator never ran)."""
    raw = data.get("providers")
    if not isinstance(raw, list) or not raw:
        return []  # reported as required; nothing to cross-check
    providers: list[tuple[str | None, Collection[Any] | None]] = []
    for entry in raw:
        body = entry if isinstance(entry, dict) else {}
        name, models = body.get("name"), body.get("models", {})
        providers.append(
            (name if isinstance(name, str) else None, models if isinstance(models, dict) else None)
        )
    overrides: dict[str, Sequence[Any] | None] = {}
    raw_models = data.get("models")
    for model, body in raw_models.items() if isinstance(raw_models, dict) else ():
        order = body.get("provider_preference") if isinstance(body, dict) else None
        overrides[str(model)] = order if isinstance(order, list) else None
    preference = data.get("provider_preference")
    default = data.get("default_model")
    return reference_problems(
        providers,
        preference if isinstance(preference, list) else None,
        overrides,
        default if isinstance(default, str) and default else None,
    )
