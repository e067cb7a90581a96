"""``KEY=VALUE`` options from the command line: one parser for ``plan --opt``, ``--expert-opts``, ``sweep --set`` and
``sweep --grid``/``--random`` (whose values are then split further)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml


def read_value(text: str) -> Any:
    """A command-line value as YAML reads it (``true``, ``null``, ``20``, ``cem``, ``[1, 2]``), with ``1e-3`` read as
    a float (YAML 1.1 wants ``1.0e-3`` and would give the text)."""
    value = yaml.safe_load(text.strip())
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def split_assignment(item: str, flag: str, form: str = "KEY=VALUE") -> tuple[str, str]:
    """``"model-lr=1e-3"`` -> ``("model_lr", "1e-3")``: the name with dashes as underscores, the value as text;
    ``ValueError`` naming ``flag`` and the expected ``form`` when there is no ``=`` or no name."""
    if "=" not in item or not item.split("=", 1)[0].strip():
        raise ValueError(f"{flag} takes {form}, got {item!r}")
    name, value = item.split("=", 1)
    return name.strip().replace("-", "_"), value.strip()


def parse_assignments(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["horizon=20", "compile=true"]`` -> ``{"horizon": 20, "compile": True}`` (values by ``read_value``)."""
    return {name: read_value(value) for name, value in (split_assignment(item, flag) for item in items)}
