"""Retry or cancel from the dashboard (``provision.actions``): a confirmation page that counts
what the action would change now, and the POST that does it and goes back with a notice."""

from __future__ import annotations

import dataclasses

from fastapi.responses import RedirectResponse, Response
from starlette.requests import Request

from provision import actions
from provision.dashboard.context import Board, Form, Operator, Posted
from provision.dashboard.paths import safe_next, with_query
from provision.dashboard.render import SECURITY_HEADERS, said, sentence
from provision.filters import filter_fields, parse_filter
from worker.errors import InvalidRequestError


def confirm(
    request: Request,
    board: Board,
    session: Operator,
    action: str = "",
    job: str = "",
    next: str = "",
) -> Response:
    """What an action would change, counted now, and the form that does it."""
    if action not in actions.APPLIES_TO:
        return board.templates.problem(request, session, 422, "Choose retry or cancel.")
    statuses = actions.APPLIES_TO[action]
    within = session.principal.restriction
    if job:
        found = board.store.find(job)
        if found is None or not session.principal.sees(found.account):
            return board.templates.problem(request, session, 404, f"There is no job {job!r}.")
        count = int(found.status in statuses)
        fields = {"job": found.id}
        described = [("job", found.id), ("domain", found.domain)]
    else:
        try:
            where = parse_filter(request.query_params, required=True)
        except InvalidRequestError as exc:
            return board.templates.problem(request, session, 422, said(exc))
        where = dataclasses.replace(where, within=within)
        count = actions.count_matching(board.store, action, where)
        fields = filter_fields(where)
        described = list(fields.items())
    return board.templates.render(
        request,
        "confirm.html",
        session=session,
        title=f"Confirm {action}",
        action=action,
        verb=actions.DONE[action],
        count=count,
        statuses=[s.value for s in statuses],
        fields=fields,
        described=described,
        next=safe_next(next),
    )


def act(request: Request, action: str, board: Board, session: Posted, form: Form) -> Response:
    """Retry or cancel one job (``job``) or every job the form's filter matches, then back to
    ``next`` with how many changed."""
    if action not in actions.APPLIES_TO:
        return board.templates.problem(request, session, 404, "No such action.")
    principal = session.principal
    if not principal.can("jobs:operate"):
        reason = f"the token {principal.name!r} you signed in with lacks jobs:operate"
        return board.templates.refused(request, reason)
    ref = (form.get("job") or "").strip()
    within = principal.restriction
    try:
        if ref:
            actions.act_on_job(
                board.store, action, ref, actor=principal.name, within=within, door="dashboard"
            )
            changed = 1
        else:
            where = dataclasses.replace(parse_filter(form, required=True), within=within)
            done = actions.act_on_matching(
                board.store, action, where, actor=principal.name, door="dashboard"
            )
            changed = len(done.ids)
    except actions.JobNotFoundError:
        return board.templates.problem(request, session, 404, f"There is no job {ref!r}.")
    except actions.WrongStatusError as exc:
        return board.templates.problem(request, session, 409, sentence(str(exc)))
    except InvalidRequestError as exc:
        return board.templates.problem(request, session, 422, said(exc))
    target = with_query(safe_next(form.get("next")), done=action, n=changed)
    return RedirectResponse(target, 303, headers=SECURITY_HEADERS)
