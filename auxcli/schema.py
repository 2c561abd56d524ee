"""JSON Schema (draft-07) of the spec, for editors (`# yaml-language-server: $schema=...`)."""

from __future__ import annotations

from typing import Any

from auxcli.spec import Spec


def spec_json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(by_alias=True, ref_template="#/definitions/{model}")
    schema["definitions"] = schema.pop("$defs", {})
    schema["properties"]["extends"] = {
        "description": "Base spec file(s), relative to this one, merged before this file's keys.",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$id": "auxcli-spec", **schema}
