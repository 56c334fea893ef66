"""What the routes work on (the status table, the quota reporter, the account names), set on
the app once by ``create_app`` and handed to each route as a FastAPI dependency."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.security import HTTPBearer

from producers.plans.refresh import LiveReader
from provision.http.changes import JobChanges
from provision.http.errors import ApiError
from provision.http.openapi import errors
from provision.tokens import Principal
from worker.jobs.store import JobStore
from worker.quota.report import Reporter


@dataclass(frozen=True)
class Parts:
    store: JobStore
    #: None: started without quota reporting (no ``/quota``, no batch ETA).
    reporter: Reporter | None = None
    #: The account names events may use; None: any.
    accounts: Collection[str] | None = None
    #: Reads sites live for ``POST /plans?refresh=true``; None: started without the settings to.
    refresher: LiveReader | None = None
    #: Wakes ``?wait`` pollers when their job changes; None: they only re-read on their own.
    changes: JobChanges | None = None


def attach(app: FastAPI, parts: Parts) -> None:
    app.state.parts = parts


def parts_of(request: Request) -> Parts:
    parts: Parts = request.app.state.parts
    return parts


def principal_of(request: Request) -> Principal:
    principal: Principal = request.state.principal  # left there by provision.http.gate
    return principal


# async: a plain def dependency would take a trip through the threadpool for an attribute read.
async def _parts(request: Request) -> Parts:
    return parts_of(request)


async def _store(parts: Annotated[Parts, Depends(_parts)]) -> JobStore:
    return parts.store


async def _reporter(parts: Annotated[Parts, Depends(_parts)]) -> Reporter | None:
    return parts.reporter


async def _accounts(parts: Annotated[Parts, Depends(_parts)]) -> Collection[str] | None:
    return parts.accounts


async def _refresher(parts: Annotated[Parts, Depends(_parts)]) -> LiveReader | None:
    return parts.refresher


async def _principal(request: Request) -> Principal:
    return principal_of(request)


Store = Annotated[JobStore, Depends(_store)]
#: Who the request acts as: its token's scopes and the accounts it may see.
Caller = Annotated[Principal, Depends(_principal)]
OptionalReporter = Annotated[Reporter | None, Depends(_reporter)]
Accounts = Annotated[Collection[str] | None, Depends(_accounts)]
OptionalRefresher = Annotated[LiveReader | None, Depends(_refresher)]

# Declares the scheme for OpenAPI ("Authorize" in /docs); provision.http.gate does the checking.
_bearer = HTTPBearer(
    scheme_name="bearer",
    description="A token of the accounts file, or `PROVISIONER_API_TOKEN`",
    auto_error=False,
)


def data_router() -> APIRouter:
    """A router for routes that need the bearer token."""
    return APIRouter(dependencies=[Security(_bearer)], responses=errors(401))


def scoped(scope: str, openapi_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A route's keyword arguments that make it need ``scope`` (``provision.tokens``): the
    check (else 403) and, in its OpenAPI operation, ``x-scope``."""

    async def check(caller: Caller) -> None:
        require(caller, scope)

    return {
        "dependencies": [Depends(check)],
        "openapi_extra": {**(openapi_extra or {}), "x-scope": scope},
    }


def require(caller: Principal, scope: str) -> None:
    """A 403 unless ``caller`` holds ``scope``."""
    if not caller.can(scope):
        raise ApiError(403, "forbidden", f"token {caller.name!r} lacks the scope {scope}")
