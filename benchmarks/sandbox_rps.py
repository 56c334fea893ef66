"""Requests per second the sandbox sustains: ``python benchmarks/sandbox_rps.py [--seconds 10]``.

Starts ``python -m sandbox`` as a subprocess (limits raised so nothing is refused), then runs
several keep-alive connections over raw sockets from this process, alternating an authorised
``GET /api/v1/sites`` and a ``PUT /api/v1/sites/goals`` (find-or-create, so state stays small).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def start_sandbox() -> tuple[subprocess.Popen[str], str, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--hourly-limit",
            "100000000",
            "--burst-limit",
            "100000000",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://([\d.]+):(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"sandbox did not start: {line!r}")
    return proc, match.group(1), int(match.group(2))


def requests(host: str) -> list[bytes]:
    body = json.dumps(
        {"site_id": "bench.test", "goal_type": "event", "event_name": "Signup"}
    ).encode()
    common = f"Host: {host}\r\nAuthorization: Bearer {KEY}\r\nAccept: application/json\r\n"
    get = f"GET /api/v1/sites HTTP/1.1\r\n{common}\r\n".encode()
    put = (
        f"PUT /api/v1/sites/goals HTTP/1.1\r\n{common}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return [get, put]


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)
    return status


async def worker(host: str, port: int, deadline: float, counts: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    payloads = requests(host)
    index = 0
    while time.perf_counter() < deadline:
        writer.write(payloads[index % 2])
        index += 1
        status = await read_response(reader)
        counts[status] = counts.get(status, 0) + 1
    writer.close()


async def hammer(host: str, port: int, seconds: float, connections: int) -> dict[int, int]:
    reader, writer = await asyncio.open_connection(host, port)
    setup = json.dumps({"domain": "bench.test"}).encode()
    writer.write(
        f"POST /api/v1/sites HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(setup)}\r\n\r\n".encode()
        + setup
    )
    assert await read_response(reader) == 200
    writer.close()
    counts: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    await asyncio.gather(*(worker(host, port, deadline, counts) for _ in range(connections)))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    proc, host, port = start_sandbox()
    try:
        started = time.perf_counter()
        counts = asyncio.run(hammer(host, port, args.seconds, args.connections))
        elapsed = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    total = sum(counts.values())
    print(f"{total} requests in {elapsed:.1f} s over {args.connections} keep-alive connections")
    print(f"status codes: {dict(sorted(counts.items()))}")
    print(f"{total / elapsed:.0f} requests/s")


if __name__ == "__main__":
    main()
