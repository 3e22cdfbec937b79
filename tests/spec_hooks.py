"""Schemathesis hooks for tests/test_spec.py: rules the OpenAPI document gives as ``x-``
extensions because OpenAPI 3.0 cannot say them (loaded by ``st`` through SCHEMATHESIS_HOOKS)."""
from __future__ import annotations

import schemathesis


@schemathesis.hook
def filter_query(context, query):
    """x-requires-one-of: at least one of these query parameters, not empty ("name=value": with
    that value). An empty parameter is the same as none."""
    names = context.operation.definition.raw.get("x-requires-one-of")
    if not names:
        return True
    query = query or {}
    for name in names:
        key, _, value = name.partition("=")
        given = str(query.get(key) or "")
        if given and (not value or given == value):
            return True
    return False
