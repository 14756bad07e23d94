"""The OpenAPI 3.1 description of the HTTP server, generated from the policy and the operation table.

Every request body is the policy's request kind, field by field (type, bounds, required),
with no field beyond it (``additionalProperties: false``, as the gate refuses them); the
policy stays the validator, this document describes it. Served at ``/openapi.json``.
"""

from __future__ import annotations

import json

from . import protocol
from .policy import GROUPINGS, PERIODS, REPORTS, FieldRule, Policy
from .protocol import Operation

_ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "enum": sorted(protocol.STATUS)},
                "message": {"type": "string", "description": "names the field and the rule, never the value"},
            },
        }
    },
}

_STRING, _INT, _BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
_RECEIPT = {
    "type": "object",
    "required": ["kind", "txn", "points", "balance", "spend", "replayed", "relinked"],
    "properties": {
        "kind": {"type": "string", "enum": ["checkout", "refund", "redeem"]},
        "txn": _STRING, "points": _INT, "balance": _INT, "spend": _STRING, "gift": _STRING, "reward": _STRING,
        "refund_id": _STRING, "gift_to_return": _STRING, "discount": _STRING, "replayed": _BOOL, "relinked": _BOOL,
        "coupons": {"type": "array", "items": {"type": "object"}},
    },
}  # fmt: skip
_RESULTS: dict[str, dict] = {
    "checkout": _RECEIPT,
    "refund": _RECEIPT,
    "redeem": _RECEIPT,
    "balance": {
        "type": "object",
        "required": ["points", "visits", "recent", "relinked"],
        "properties": {"points": _INT, "visits": _INT, "recent": {"type": "array", "items": {"type": "object"}},
                       "relinked": _BOOL},
    },
    "enter": {
        "type": "object",
        "required": ["coupons", "relinked"],
        "properties": {
            "coupons": {"type": "array", "items": {
                "type": "object", "required": ["code", "category", "kind", "value", "expires", "text", "new"],
                "properties": {"code": _STRING, "category": _STRING, "kind": _STRING, "value": _INT,
                               "expires": _STRING, "text": _STRING, "new": _BOOL}}},
            "relinked": _BOOL,
        },
    },
    "coupon_public_key": {
        "type": "object",
        "required": ["ed25519_public_key", "key_id"],
        "properties": {"ed25519_public_key": _STRING, "key_id": _INT},
    },
    "issue_cards": {
        "type": "object", "required": ["cards", "recovery"],
        "properties": {"cards": {"type": "array", "items": _STRING}, "recovery": {"type": "array", "items": _STRING}},
    },
    "export": {
        "type": "object", "required": ["format", "exported_on", "policy_fingerprint", "balance", "visits", "tables",
                                       "retention"],
        "properties": {"format": {"type": "string", "const": "anoncard-export/1"}, "exported_on": _STRING,
                       "policy_fingerprint": _STRING, "balance": _INT, "visits": _INT,
                       "tables": {"type": "object"}, "retention": {"type": "object"}},
    },
    "erase": {
        "type": "object", "required": ["erased", "reward", "points_redeemed", "points_forfeited", "wal_cleared"],
        "properties": {"erased": _BOOL, "reward": {"type": ["string", "null"]}, "points_redeemed": _INT,
                       "points_forfeited": _INT, "wal_cleared": _BOOL},
    },
    "replace": {
        "type": "object", "required": ["card", "recovery", "balance", "history_moved", "wal_cleared"],
        "properties": {"card": _STRING, "recovery": _STRING, "balance": _INT, "history_moved": _BOOL,
                       "wal_cleared": _BOOL},
    },
    "keys_list": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "array"}}},
    "keys_rotate": {"type": "object", "required": ["primary"], "properties": {"primary": _INT}},
    "terminals_list": {"type": "object", "required": ["terminals"], "properties": {"terminals": {"type": "array"}}},
    "terminals_add": {
        "type": "object", "required": ["name", "role", "created", "key"],
        "properties": {"name": _STRING, "role": _STRING, "created": _STRING, "key": _STRING},
    },
    "policy": {"type": "object", "required": ["fingerprint", "policy"]},
    "insights": {
        "type": "object", "required": ["period", "first_day", "last_day", "epsilon", "bounds", "figures"],
        "properties": {"period": _STRING, "first_day": _STRING, "last_day": _STRING, "figures": {"type": "array"}},
    },
}  # fmt: skip

_ERRORS = {
    400: "refused by the policy gate or malformed (policy_violation, card_error)",
    401: "no terminal key, or an unknown or revoked one (unauthenticated)",
    403: "the terminal's role does not reach this operation (forbidden)",
    409: "refused: a conflict or a refused operation (ledger_error, coupon_error, keyring_error, insights_refused)",
    413: "the body is larger than the limit (too_large)",
    415: "the body is not declared as JSON (not_json)",
    429: "too many unknown cards, or unknown recovery codes, from this terminal (rate_limited); see Retry-After",
    503: "the database is busy or cannot be written, or this server's key ring copy lacks the newest key; retry"
    " (store_error, keyring_behind)",
}


def field_schema(rule: FieldRule) -> dict:
    """The JSON Schema of one policy field: its type and the bounds the gate enforces."""
    t = rule.type
    if t == "card_code":
        return {"type": "string", "maxLength": 64, "description": "a card code as printed (C1-...)"}
    if t == "recovery_code":
        return {"type": "string", "maxLength": 64, "description": "the recovery code on the card's stub (R1-...)"}
    if t == "flag":
        return {"type": "boolean"}
    if t == "document_id":
        return {"type": "string", "minLength": 1, "maxLength": rule.max_length,
                "pattern": "^[A-Za-z0-9][A-Za-z0-9._:/-]*$", "description": "a till document number"}  # fmt: skip
    if t == "reward_name":
        return {"type": "string", "minLength": 1, "maxLength": rule.max_length, "pattern": "^[a-z0-9][a-z0-9 _-]*$"}
    if t == "category":
        return {"type": "string", "minLength": 1, "maxLength": rule.max_length,
                "description": "a product category (never a product or SKU)"}  # fmt: skip
    if t == "amount":
        return {"type": "string", "pattern": r"^[0-9]{1,9}(\.[0-9]{1,2})?$",
                "description": f"euros as a decimal string, {rule.min / 100:.2f} to {rule.max / 100:.2f}"}  # fmt: skip
    if t == "count":
        return {"type": "integer", "minimum": rule.min, "maximum": rule.max}
    if t == "period":
        return {"type": "string", "enum": list(PERIODS)}
    if t == "grouping":
        return {"type": "string", "enum": list(GROUPINGS)}
    if t == "insights_report":
        return {"type": "string", "enum": list(REPORTS)}
    if t == "day":
        return {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "description": "a Sunday, YYYY-MM-DD"}
    if t == "coupon_codes":
        return {"type": "array", "maxItems": rule.max_items, "uniqueItems": True,
                "items": {"type": "string", "maxLength": 400}}  # fmt: skip
    if t == "lines":
        items = {r.name: field_schema(r) for r in rule.items}
        return {"type": "array", "minItems": 1, "maxItems": rule.max_items, "items": {
            "type": "object", "additionalProperties": False, "required": sorted(items), "properties": items}}
    raise ValueError(f"no JSON Schema for policy type {t!r}")


AT_SCHEMA = {
    "type": "string",
    "pattern": "^" + protocol.ISO_8601.pattern + "$",
    "description": "the till's own time of a sale replayed from an offline outbox (ISO 8601); "
    "accepted only inside the window the policy declares",
}


def body_schema(op: Operation, policy: Policy) -> dict | None:
    """The request body of an operation, or None when it takes none (a GET)."""
    if op.method != "POST":
        return None
    if op.kind is not None:
        fields = policy.requests.get(op.kind, {})
        properties = {name: field_schema(rule) for name, rule in fields.items()}
        required = sorted(name for name, rule in fields.items() if rule.required)
    else:
        properties, required = dict(op.body or {}), sorted(op.body or {})
    if op.at:
        properties["at"] = AT_SCHEMA
    schema: dict = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = required
    return schema


def document(policy: Policy) -> dict:
    """The OpenAPI 3.1 document for this policy and :data:`anoncard.protocol.OPERATIONS`."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    paths: dict[str, dict] = {}
    for op in protocol.OPERATIONS:
        codes = [400, 401, 403, 409, 503] + ([413, 415] if op.method == "POST" else [])
        if op.card:
            codes += [404, 429]
        responses: dict[str, dict] = {
            "200": {"description": "the result", "content": {"application/json": {
                "schema": _RESULTS.get(op.name, {"type": "object"})}}},
        }  # fmt: skip
        for code in sorted(codes):
            text = _ERRORS.get(code, "unknown card (unknown_card)")
            responses[str(code)] = {"description": text, **error}
            if code == 429:
                responses[str(code)]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        entry: dict = {
            "operationId": op.name,
            "summary": op.summary,
            "description": f"Roles: {', '.join(sorted(op.roles))}."
            + (f" Policy request kind: {op.kind} ({policy.request_purpose.get(op.kind, '')})." if op.kind else ""),
            "x-roles": sorted(op.roles),
            "responses": responses,
        }
        body = body_schema(op, policy)
        if body is not None:
            entry["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    open_get = {"security": [], "responses": {"200": {"description": "ok"}}}
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "Liveness", **open_get}}
    paths["/metrics"] = {"get": {"operationId": "metrics", "summary": "Prometheus text format", "security": [],
                                 "responses": {"200": {"description": "metrics",
                                                       "content": {"text/plain": {"schema": _STRING}}}}}}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "anoncard store server",
            "version": "1",
            "description": f"{policy.title}. Policy fingerprint {policy.fingerprint}.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "a terminal key"}},
        },
        "security": [{"bearer": []}],
    }


def document_bytes(policy: Policy) -> bytes:
    return json.dumps(document(policy), separators=(",", ":")).encode()
