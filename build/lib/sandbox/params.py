"""Request parameters the way Plug builds them.

Query strings and form bodies use bracket notation for nested objects (``a[b]=1``, ``a[]=1``);
JSON bodies that are not objects land under ``_json``; bodies are read only for POST, PUT,
PATCH and DELETE. Anything Plug would refuse raises ``MalformedRequestError`` (a 400).
"""

from __future__ import annotations

import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import unquote_to_bytes

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_KEY_PARTS = re.compile(r"\[([^\[\]]*)\]")


class MalformedRequestError(Exception):
    """The request cannot be decoded: Plug raises a 400 before any route runs."""


def percent_decode(raw: str, *, plus_as_space: bool) -> str:
    """Decode %XX escapes as Elixir's URI decoders do: malformed escapes or UTF-8 are errors."""
    if _BAD_ESCAPE.search(raw):
        raise MalformedRequestError(raw)
    if plus_as_space:
        raw = raw.replace("+", " ")
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequestError(raw) from exc


def _put(target: dict[str, Any], name: str, value: Any) -> None:
    """Store ``value`` under a possibly bracketed ``name`` (``a[b][]``), as Plug does."""
    head, _, rest = name.partition("[")
    parts = _KEY_PARTS.findall("[" + rest) if rest else []
    keys = [head, *parts]
    node: Any = target
    for index, key in enumerate(keys):
        last = index == len(keys) - 1
        if key == "" and index > 0:
            # "a[]" appends; the list lives in the parent under the previous key.
            continue
        following = keys[index + 1] if not last else None
        if last:
            node[key] = value
        elif following == "" and index + 1 == len(keys) - 1:
            existing = node.get(key)
            node[key] = [*existing, value] if isinstance(existing, list) else [value]
            return
        else:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child


def decode_form(text: str) -> dict[str, Any]:
    """Decode a query string or an urlencoded body into nested params."""
    params: dict[str, Any] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        key = percent_decode(raw_key, plus_as_space=True)
        if key:
            _put(params, key, percent_decode(raw_value, plus_as_space=True))
    return params


def _reject_constant(name: str) -> Any:
    raise MalformedRequestError(name)


def decode_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedRequestError("invalid JSON") from exc
    return value if isinstance(value, dict) else {"_json": value}


def decode_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise MalformedRequestError("invalid multipart body")
    params: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        try:
            _put(params, name, data.decode(part.get_content_charset() or "utf-8"))
        except (UnicodeDecodeError, LookupError) as exc:
            raise MalformedRequestError("invalid multipart part") from exc
    return params


def decode_body(method: str, content_type: str, body: bytes) -> dict[str, Any]:
    """Body params by content type; unknown types pass through as no params (``pass: */*``)."""
    if method not in BODY_METHODS:
        return {}
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json")):
        return decode_json(body)
    if mime == "application/x-www-form-urlencoded":
        try:
            return decode_form(body.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise MalformedRequestError("invalid form body") from exc
    if mime in ("multipart/form-data", "multipart/mixed"):
        return decode_multipart(content_type, body)
    return {}


def accepts_json(accept: str | None) -> bool:
    """Phoenix ``accepts ["json"]``: no header, ``*/*``, ``application/*`` or ``application/json``."""
    if accept is None or not accept.strip():
        return True
    for entry in accept.split(","):
        media = entry.split(";", 1)[0].strip().lower()
        if media in ("*/*", "application/*", "application/json"):
            return True
    return False
