"""What the job page shows of a job: each step of its operation with its checkpoint, and its
request without what a receiver's secret may sit in."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from worker.jobs.models import ProvisioningJob
from worker.jobs.states import JobStatus, Operation

#: What a step a job never did says, once the job has ended without doing it.
NOT_DONE = {
    JobStatus.failed: "not done: the job failed",
    JobStatus.cancelled: "not done: the job was cancelled",
    JobStatus.succeeded: "not needed",
}


def steps_of(job: ProvisioningJob) -> list[dict[str, Any]]:
    """Each step of the job with its checkpoint: done (and what it recorded), still to do, or,
    once the job has ended without it, why not: the step it stopped at says what stopped it."""
    steps = _steps(job)
    status = JobStatus(job.status)
    if not status.done:
        return steps
    undone = [step for step in steps if not step["done"]]
    for step in undone:
        step["detail"] = NOT_DONE[status]
    if undone and status is JobStatus.failed:
        reason = (job.error_message or "").strip()
        undone[0]["detail"] = f"failed: {job.error_code}" + (f" — {reason}" if reason else "")
    return steps


def _steps(job: ProvisioningJob) -> list[dict[str, Any]]:
    spec, progress = job.spec, job.progress
    steps: list[dict[str, Any]] = []
    if spec.operation is Operation.provision_site:
        site = progress.site
        if site is None:
            state = "create sent, outcome not yet known" if progress.create_sent else "to do"
            steps.append({"name": "Site", "done": False, "detail": state})
        else:
            how = (
                "adopted: it was in the account already"
                if site.existed
                else "adopted: the domain was taken, by a site of ours"
                if site.adopted
                else "created"
            )
            steps.append(
                {"name": "Site", "done": True, "detail": f"{how} — {site.domain} ({site.timezone})"}
            )
        for goal in spec.goals:
            record = progress.goals.get(goal.natural_key)
            label = goal.event_name or goal.page_path or goal.natural_key
            steps.append(
                {
                    "name": f"Goal {goal.goal_type}: {label}",
                    "done": record is not None,
                    "detail": f"goal id {record.id}" if record is not None else "to do",
                }
            )
        for name in spec.shared_links:
            url = progress.shared_links.get(name)
            steps.append(
                {
                    "name": f"Shared link: {name}",
                    "done": url is not None,
                    "detail": "" if url is not None else "to do",
                    "url": url,
                    # Linked only if it is a web address (it is what Plausible answered).
                    "href": url if url and url.startswith(("https://", "http://")) else None,
                }
            )
        for prop in spec.custom_props:
            done = prop in progress.custom_props
            steps.append(
                {
                    "name": f"Custom property: {prop}",
                    "done": done,
                    "detail": "" if done else "to do",
                }
            )
        for guest in spec.guests:
            role = progress.guests.get(guest.email)
            steps.append(
                {
                    "name": f"Guest: {guest.email}",
                    "done": role is not None,
                    "detail": f"invited as {role}" if role is not None else "to do",
                }
            )
        if spec.tracker_script_configuration is not None:
            steps.append(_tracker_step(spec.tracker_script_configuration, progress.tracker))
    elif spec.operation is Operation.set_tracker:
        steps.append(_tracker_step(spec.tracker_script_configuration or {}, progress.tracker))
    elif spec.operation in (Operation.delete_prop, Operation.delete_guest):
        what = (
            f"custom property {spec.custom_prop}"
            if spec.operation is Operation.delete_prop
            else f"guest {spec.email}"
        )
        done = bool(progress.deleted)
        steps.append(
            {"name": f"Delete {what}", "done": done, "detail": "deleted" if done else "to do"}
        )
    elif spec.operation is Operation.delete_site:
        done = bool(progress.deleted)
        detail = "deleted" if done else "to do"
        if progress.already_gone:
            detail = "already gone (our earlier delete went through)"
        steps.append({"name": "Delete site", "done": done, "detail": detail})
    else:
        found = progress.goal_id
        steps.append(
            {
                "name": "Find goal",
                "done": found is not None,
                "detail": f"goal id {found} (from {progress.goal_id_source})"
                if found is not None
                else "to do",
            }
        )
        steps.append(
            {
                "name": "Delete goal",
                "done": bool(progress.deleted),
                "detail": "deleted" if progress.deleted else "to do",
            }
        )
    return steps


def shown_request(request: dict[str, Any]) -> dict[str, Any]:
    """The request as the job page shows it: a ``callback_url`` without its user, query and
    fragment, where a receiver's secret may sit."""
    shown = dict(request)
    url = shown.get("callback_url")
    if isinstance(url, str):
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        hidden = "?…" if parts.query or parts.fragment else ""
        shown["callback_url"] = f"{parts.scheme}://{host}{port}{parts.path}{hidden}"
    return shown


def _tracker_step(settings: dict[str, Any], answered: dict[str, Any] | None) -> dict[str, Any]:
    shown = ", ".join(f"{name} {json.dumps(value)}" for name, value in settings.items())
    return {
        "name": f"Tracker configuration: {shown}",
        "done": answered is not None,
        "detail": "set" if answered is not None else "to do",
    }
