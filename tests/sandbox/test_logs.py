"""Structured logs: JSON lines (or text) tagged with the job being run, never a secret."""

from __future__ import annotations

import io
import json
import logging
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from testkit.databases import migrated_engine
from testkit.pipelines import make_pipeline, provision
from testkit.sandbox_process import SandboxProcess
from worker import logs
from worker.jobs.states import JobStatus
from worker.jobs.store import JobStore
from worker.settings import Settings

REQUIRED = ("time", "level", "logger", "message")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root, pool = logging.getLogger(), logging.getLogger("multiprocessing")
    saved = {logger: (list(logger.handlers), logger.level) for logger in (root, pool)}
    propagate = pool.propagate
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    for logger, (handlers, level) in saved.items():
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
    pool.propagate = propagate
    logging.captureWarnings(False)
    for name, value in quiet.items():
        logging.getLogger(name).setLevel(value)


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = stream.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_every_line_of_a_job_carries_its_fields_and_no_line_its_key(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    secret = f"sk-{uuid.uuid4().hex}"
    sandbox.add_key(key=secret)
    settings = Settings(log_format="json", plausible_api_key=SecretStr(secret))
    stream = io.StringIO()
    logs.configure(settings, stream=stream, level=logging.DEBUG)  # the client logs at DEBUG
    store = JobStore(migrated_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    pipeline = make_pipeline(sandbox, store, key=secret)
    job = store.enqueue(provision(), key="evt-logs-1").job

    assert pipeline.run(job.id) is JobStatus.succeeded
    logging.getLogger("worker.after").info("after the run")
    pipeline.clients["default"].close()

    lines = json_lines(stream)
    assert all(all(line.get(k) for k in REQUIRED) for line in lines), lines
    expected = {
        "job_id": job.id,
        "idempotency_key": "evt-logs-1",
        "domain": "shop.example.com",
        "operation": "provision_site",
        "account": "default",
    }
    about_job = [line for line in lines if line.get("job_id") == job.id]
    assert all({k: line.get(k) for k in logs.JOB_FIELDS} == expected for line in about_job)
    loggers = {line["logger"] for line in about_job}
    # lines of the pipeline and of the API client, which knows nothing of jobs
    assert {"worker.service", "worker.plausible"} <= loggers, loggers
    assert any("succeeded" in line["message"] for line in about_job)
    requests = [line for line in about_job if line["logger"] == "worker.plausible"]
    assert [line["message"].split()[:2] for line in requests] == [
        ["POST", "/api/v1/sites"],
        ["PUT", "/api/v1/sites/goals"],
        ["PUT", "/api/v1/sites/goals"],
        ["PUT", "/api/v1/sites/shared-links"],
    ]
    (after,) = [line for line in lines if line["message"] == "after the run"]
    assert not set(logs.JOB_FIELDS) & set(after)
    assert secret not in stream.getvalue()


def test_secrets_and_bearer_credentials_are_scrubbed_from_messages_and_tracebacks() -> None:
    key, token = f"key-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
    settings = Settings(
        log_format="json", plausible_api_key=SecretStr(key), api_token=SecretStr(token)
    )
    stream = io.StringIO()
    logs.configure(settings, stream=stream)
    log = logging.getLogger("worker.test")
    log.info("sending %s", key)
    log.warning("header was Authorization: Bearer abcdefghijklmnop")
    try:
        raise RuntimeError(f"token {token} leaked into an error")
    except RuntimeError:
        log.exception("request failed")
    log.info("a bearer token is required")  # prose stays readable

    text = stream.getvalue()
    assert key not in text
    assert token not in text
    assert "abcdefghijklmnop" not in text
    sent, header, failed, prose = json_lines(stream)
    assert sent["message"] == f"sending {logs.REDACTED}"
    assert header["message"] == f"header was Authorization: Bearer {logs.REDACTED}"
    assert failed["message"] == "request failed"
    assert "RuntimeError" in failed["exception"]
    assert logs.REDACTED in failed["exception"]
    assert prose["message"] == "a bearer token is required"


def test_secrets_default_to_every_account_key_and_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[accounts.agency-b]\napi_key_env = "LOGS_TEST_KEY_B"\n')
    monkeypatch.setenv("LOGS_TEST_KEY_B", "key-of-agency-b")
    settings = Settings(
        plausible_api_key=SecretStr("key-of-default"),
        api_token=SecretStr("the-http-token"),
        accounts_file=accounts,
        log_format="text",
    )
    assert sorted(logs.known_secrets(settings)) == [
        "key-of-agency-b",
        "key-of-default",
        "the-http-token",
    ]
    stream = io.StringIO()
    logs.configure(settings, stream=stream)
    logging.getLogger("worker.test").warning("keys key-of-agency-b and key-of-default")
    assert stream.getvalue().rstrip().endswith(f"keys {logs.REDACTED} and {logs.REDACTED}")


def test_auto_is_json_off_a_terminal_and_text_on_one() -> None:
    auto = Settings(log_format="auto")
    piped, tty = io.StringIO(), Tty()
    logs.configure(auto, stream=piped)
    logging.getLogger("worker.test").info("to a pipe")
    assert json.loads(piped.getvalue())["message"] == "to a pipe"

    logs.configure(auto, stream=tty)
    with logs.job_context(job_id="job-7", domain="a.example.com"):
        logging.getLogger("worker.test").info("to a terminal")
    line = tty.getvalue().strip()
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "INFO" in line
    assert "worker.test: to a terminal (job_id=job-7 domain=a.example.com)" in line
    assert piped.getvalue().count("\n") == 1  # the first handler was replaced, not kept


def test_warnings_and_the_pool_logger_come_out_in_the_same_format() -> None:
    stream = io.StringIO()
    logs.configure(Settings(log_format="json"), stream=stream)
    warnings.warn("running as root", UserWarning, stacklevel=1)
    # billiard (the Celery pool) logs a dead child on a logger that does not propagate
    pool = logging.getLogger("multiprocessing")
    pool.propagate = False
    pool.info("child process %d calling self.run()", 123)  # noise, below DEBUG
    pool.error("Process %r exited with %r", "ForkPoolWorker-1", "signal 9 (SIGKILL)")
    warned, died = json_lines(stream)
    assert (warned["logger"], warned["level"]) == ("py.warnings", "WARNING")
    assert "running as root" in warned["message"]
    assert (died["logger"], died["level"]) == ("multiprocessing", "ERROR")


def test_forced_formats_ignore_the_stream() -> None:
    tty = Tty()
    logs.configure(Settings(log_format="json"), stream=tty)
    logging.getLogger("worker.test").info("json on a terminal")
    assert json.loads(tty.getvalue())["level"] == "INFO"

    piped = io.StringIO()
    logs.configure(Settings(log_format="text"), stream=piped)
    logging.getLogger("worker.test").info("text into a pipe")
    assert piped.getvalue().rstrip().endswith("worker.test: text into a pipe")


def test_the_job_context_belongs_to_its_thread_and_nests() -> None:
    stream = io.StringIO()
    logs.configure(Settings(log_format="json"), stream=stream)
    log = logging.getLogger("worker.test")
    with logs.job_context(job_id="job-1"):
        with logs.job_context(domain="a.example.com", account=None):
            log.info("inner")
        log.info("outer")
        other = threading.Thread(target=lambda: log.info("other thread"))
        other.start()
        other.join()
    inner, outer, elsewhere = json_lines(stream)
    assert (inner["job_id"], inner["domain"], "account" in inner) == (
        "job-1",
        "a.example.com",
        False,
    )
    assert outer["job_id"] == "job-1"
    assert "domain" not in outer
    assert "job_id" not in elsewhere
