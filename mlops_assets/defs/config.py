"""Launchpad config whose defaults come from the use-case definition."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import BaseModel, Field, create_model


def config_class(name: str, base: type[dg.Config], defaults: dict[str, Any]) -> type[dg.Config]:
    """A subclass of `base` whose field defaults are `defaults` (e.g. one use case's values)."""
    fields = {}
    for field_name, value in defaults.items():
        field = base.model_fields[field_name]
        fields[field_name] = (field.annotation, Field(value, description=field.description))
    return create_model(name, __base__=base, **fields)


def config_from_model(name: str, model: BaseModel) -> type[dg.Config]:
    """A Config class with the fields of a pydantic model, defaulting to that model's values."""
    fields = {
        field_name: (field.annotation, Field(getattr(model, field_name), description=field.description))
        for field_name, field in type(model).model_fields.items()
    }
    return create_model(name, __base__=dg.Config, **fields)


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
