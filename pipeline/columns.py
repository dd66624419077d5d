"""Input column types, decided from Parquet footers before Ray starts.

Files from different writers often disagree on a column's type (an integer `id` here, text
there); Ray Data then fails mid-job merging blocks (`Unable to merge: Field id has incompatible
types`, issue 13). The driver reads every footer anyway, so it decides here, per column role:

  prompt    text (or all-null) in every file; any other type makes the file a bad file
  messages  text (JSON) or a list of {role, content}; a file whose kind differs from the first
            good file's is a bad file
  id        any primitive type, read as text (the README: ids are kept as text)
  sampling  numbers (or all-null): int64 when every file has integers, else float64

`read_schema` is what Ray reads with (`read_parquet(schema=...)` casts each file to it).
"""
from __future__ import annotations

from typing import Literal

import pyarrow as pa

Role = Literal["prompt", "messages", "id", "sampling"]


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def type_problem(column: str, role: Role, t: pa.DataType) -> str | None:
    """Why a file's column of type `t` cannot play `role` (None when it can): the BadFile reason."""
    if pa.types.is_null(t):
        return None
    if role == "prompt" and not _is_text(t):
        return f"column {column!r} is {t}, not text"
    if role == "messages" and not (_is_text(t) or _is_list(t)):
        return f"column {column!r} is {t}, not text or a list of {{role, content}}"
    if role == "id" and not (_is_text(t) or pa.types.is_primitive(t) or pa.types.is_decimal(t)):
        return f"column {column!r} is {t}; ids must be text, numbers or other single values"
    if role == "sampling" and not _is_number(t):
        return f"column {column!r} is {t}, not a number"
    return None


def messages_kind(t: pa.DataType) -> str | None:
    """'text', 'list' or None (all-null): files must agree on it."""
    return None if pa.types.is_null(t) else ("text" if _is_text(t) else "list")


def read_schema(roles: dict[str, Role], types: list[dict[str, pa.DataType]]) -> pa.Schema:
    """One schema for every good file's `roles` columns (see the module docstring).

    Args:
        roles: input column -> role.
        types: per good file, column -> its footer type.
    """
    fields = []
    for column, role in roles.items():
        seen = [t[column] for t in types if not pa.types.is_null(t[column])]
        if role in ("prompt", "id"):
            fields.append((column, pa.string()))
        elif role == "sampling":
            fields.append((column, pa.int64() if all(pa.types.is_integer(t) for t in seen) else pa.float64()))
        elif not seen or _is_text(seen[0]):
            fields.append((column, pa.string()))
        else:
            try:
                unified = pa.unify_schemas([pa.schema([(column, t)]) for t in seen], promote_options="permissive")
                fields.append((column, unified.field(column).type))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                fields.append((column, seen[0]))  # structs that do not unify: workers/input_rows.py reports the bad cells
    return pa.schema(fields)
