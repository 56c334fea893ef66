"""Request and response values passed between the HTTP server and the API object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sandbox.state import ApiKey, Settings, Team, User, World

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
FRAMEWORK_MESSAGES = {400: "Bad Request", 404: "Not Found", 406: "Not Acceptable"}


@dataclass
class Request:
    method: str
    path: str
    query: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), as Plug's ``get_req_header``."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass
class Response:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: Carry the request out, then close the connection without answering.
    drop: bool = False
    #: Wait this long before answering.
    delay_seconds: float = 0.0


class Reply(Exception):
    """Raised anywhere in a handler to answer with ``response`` at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def json_response(status: int, payload: Any) -> Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(status, body, [("content-type", JSON_CONTENT_TYPE)])


def error(status: int, message: str) -> Reply:
    """Plausible's own ``{"error": message}`` body."""
    return Reply(json_response(status, {"error": message}))


def internal_error(status: int = 500) -> Reply:
    """An exception in the controller: Plausible answers ``internal server error``."""
    return error(status, "internal server error")


def framework_error(status: int) -> Reply:
    """An error raised before the controller, rendered by Phoenix's JSON error view."""
    return Reply(json_response(status, {"message": FRAMEWORK_MESSAGES[status], "status": status}))


@dataclass
class Call:
    """An authorised API call on its way into a handler.

    ``team`` is the plug's team context: the key's team, or for a legacy key the team its
    ``team_id`` param named (None when there is none).
    """

    world: World
    settings: Settings
    key: ApiKey
    user: User
    team: Team | None
    params: dict[str, Any]
    now: float
    base_url: str
