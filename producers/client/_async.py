"""``AsyncProvisionerClient``: the SDK's client for asyncio and trio (through anyio)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import anyio
import httpx
from tenacity import AsyncRetrying

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


class AsyncProvisionerClient(Core):
    """``ProvisionerClient``'s methods, async. Use as an async context manager, or
    ``await close()`` it. Runs on asyncio or trio (through anyio)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retries: Retries | int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, retries)
        self._http = httpx.AsyncClient(
            base_url=self._base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    aclose = close

    async def submit(self, event: Mapping[str, Any], *, idempotency_key: str | None = None) -> Job:
        """See ``ProvisionerClient.submit``."""
        body, headers = submission(event, idempotency_key)
        response = await self._call(
            "POST", "/jobs", idempotent=True, content=body, headers=headers, invalid=InvalidEvent
        )
        return self._parse(response, JOB, "a job")

    async def get(self, ref: str) -> Job:
        """See ``ProvisionerClient.get``."""
        return (await self._get(ref))[0]

    async def wait(self, ref: str, *, timeout: float, interval: float = DEFAULT_INTERVAL) -> Job:
        """See ``ProvisionerClient.wait``."""
        deadline = time.monotonic() + timeout
        job: Job | None = None
        etag: str | None = None
        while True:
            hold = self._hold(deadline - time.monotonic(), etag, self._http.timeout)
            response = await self._call(
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
                await anyio.sleep(min(retry_after if retry_after is not None else interval, left))

    async def batch(self, batch_id: str) -> Batch:
        """See ``ProvisionerClient.batch``."""
        path = batch_path(batch_id)
        return self._parse(await self._call("GET", path, idempotent=True), BATCH, "a batch")

    async def jobs(
        self,
        *,
        batch_id: str | None = None,
        status: JobStatus | str | None = None,
        domain: str | None = None,
        account: str | None = None,
        code: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> AsyncIterator[Job]:
        """See ``ProvisionerClient.jobs``."""
        params = list_params(batch_id, status, domain, account, code, page_size)
        cursor: str | None = None
        while True:
            paged = {**params, "cursor": cursor} if cursor is not None else params
            response = await self._call("GET", "/jobs", idempotent=True, params=paged)
            page = self._parse(response, PAGE, "a page of jobs")
            for job in page.jobs:
                yield job
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def quota(self) -> list[Quota]:
        """See ``ProvisionerClient.quota``."""
        return self._parse(await self._call("GET", "/quota", idempotent=True), QUOTAS, "quotas")

    async def retry(self, ref: str) -> Job:
        """See ``ProvisionerClient.retry``."""
        response = await self._call("POST", job_path(ref, "/retry"), idempotent=False)
        return self._parse(response, JOB, "a job")

    async def cancel(self, ref: str) -> Job:
        """See ``ProvisionerClient.cancel``."""
        response = await self._call("POST", job_path(ref, "/cancel"), idempotent=False)
        return self._parse(response, JOB, "a job")

    async def _get(self, ref: str) -> tuple[Job, float | None]:
        response = await self._call("GET", job_path(ref), idempotent=True)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self._parse(response, JOB, "a job"), retry_after

    async def _call(
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
        async def attempt() -> httpx.Response:
            response = await self._http.request(
                method,
                path,
                params=params,
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else self._http.timeout,
            )
            return self._check(response, invalid)

        retrying = AsyncRetrying(
            stop=self._stop(),
            wait=self._wait(),
            retry=self._retry_if(idempotent=idempotent),
            before_sleep=self._logged(f"{method} {path}"),
            sleep=anyio.sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except httpx.TransportError as exc:
            raise self._failed(exc, idempotent=idempotent) from None
