"""``ProvisionerClient``: the SDK's blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any, Self

import httpx
from tenacity import Retrying

from producers.client._core import (
    BATCH,
    DEFAULT_INTERVAL,
    DEFAULT_PAGE_SIZE,
    DEFAULT_TIMEOUT,
    JOB,
    PAGE,
    QUOTAS,
    Core,
    batch_path,
    job_path,
    list_params,
    submission,
)
from producers.client._errors import InvalidEvent, InvalidRequest, WaitTimeout
from producers.client._retries import Retries, parse_retry_after
from provisioner_types import Batch, Job, JobStatus, Quota


class ProvisionerClient(Core):
    """``provision serve``'s client. Use as a context manager, or ``close()`` it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: Retries | int | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries)
        self._http = httpx.Client(
            base_url=self._base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(self, event: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """Enqueue a signup event: the job (the same one again for the same key and event).

        Raises ``InvalidEvent`` (422, ``field`` at fault), ``Conflict``
        (``idempotency_key_reused``: the key belongs to a different event)."""
        body, headers = submission(event, idempotency_key)
        response = self._call(
            "POST", "/jobs", idempotent=True, content=body, headers=headers, invalid=InvalidEvent
        )
        return self._parse(response, JOB, "a job")

    def get(self, ref: str) -> Job:
        """A job by id or idempotency key; ``NotFound`` if there is none."""
        return self._get(ref)[0]

    def wait(self, ref: str, *, timeout: float, interval: float = DEFAULT_INTERVAL) -> Job:
        """Wait until the job is done (succeeded, failed or cancelled) and return it.

        Each request asks the service to answer as soon as the job changes (``?wait=``, with
        the ETag seen last), so a change is seen at once and a job that does not change costs
        a request every ``WAIT_HOLD_SECONDS``. A service that answers at once (no ETag) is
        polled instead, pausing as long as its ``Retry-After`` says, else ``interval`` seconds.
        Raises ``WaitTimeout`` (a ``TimeoutError``, carrying the last job seen) once
        ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        job: Job | None = None
        etag: str | None = None
        while True:
            hold = self._hold(deadline - time.monotonic(), etag, self._http.timeout)
            response = self._call(
                "GET",
                job_path(ref),
                idempotent=True,
                params=hold.params,
                headers=hold.headers,
                timeout=hold.timeout,
            )
            job, etag, retry_after = self._held(response, job)
            left = deadline - time.monotonic()
            if job.done:
                return job
            if left <= 0:
                raise WaitTimeout(ref, timeout, job)
            if etag is None:
                time.sleep(min(retry_after if retry_after is not None else interval, left))

    def batch(self, batch_id: str) -> Batch:
        """A batch's counts per status and failures; ``NotFound`` if it has no jobs."""
        path = batch_path(batch_id)
        return self._parse(self._call("GET", path, idempotent=True), BATCH, "a batch")

    def jobs(
        self,
        *,
        batch_id: str | None = None,
        status: JobStatus | str | None = None,
        domain: str | None = None,
        account: str | None = None,
        code: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> Iterator[Job]:
        """Every job matching the filters, oldest first, fetching page after page."""
        params = list_params(batch_id, status, domain, account, code, page_size)
        cursor: str | None = None
        while True:
            paged = {**params, "cursor": cursor} if cursor is not None else params
            response = self._call("GET", "/jobs", idempotent=True, params=paged)
            page = self._parse(response, PAGE, "a page of jobs")
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def quota(self) -> list[Quota]:
        """Each quota: calls used and left per window, when each resets, jobs waiting."""
        return self._parse(self._call("GET", "/quota", idempotent=True), QUOTAS, "quotas")

    def retry(self, ref: str) -> Job:
        """Queue a failed job again; ``Conflict`` (``wrong_status``) if it is not failed."""
        response = self._call("POST", job_path(ref, "/retry"), idempotent=False)
        return self._parse(response, JOB, "a job")

    def cancel(self, ref: str) -> Job:
        """Withdraw a queued or waiting job; ``Conflict`` (``wrong_status``) otherwise."""
        response = self._call("POST", job_path(ref, "/cancel"), idempotent=False)
        return self._parse(response, JOB, "a job")

    def _get(self, ref: str) -> tuple[Job, float | None]:
        response = self._call("GET", job_path(ref), idempotent=True)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self._parse(response, JOB, "a job"), retry_after

    def _call(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        invalid: type[InvalidRequest] = InvalidRequest,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        def attempt() -> httpx.Response:
            response = self._http.request(
                method,
                path,
                params=params,
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else self._http.timeout,
            )
            return self._check(response, invalid)

        retrying = Retrying(
            stop=self._stop(),
            wait=self._wait(),
            retry=self._retry_if(idempotent=idempotent),
            before_sleep=self._logged(f"{method} {path}"),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except httpx.TransportError as exc:
            raise self._failed(exc, idempotent=idempotent) from None
