"""An asyncio HTTP/1.1 server on h11, with keep-alive, serving a ``SandboxAPI``.

h11 rather than an ASGI server because ``drop_rate`` must close a connection after the request
was carried out but before any response byte is written, which ASGI servers do not allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import h11

from sandbox.api import SandboxAPI
from sandbox.http import Request, Response, json_response

READ_SIZE = 65536
#: Phoenix sends this on every API response.
EXTRA_HEADERS = [("cache-control", "max-age=0, private, must-revalidate")]


async def _send(
    conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, head: bool
) -> None:
    headers = [*response.headers, *EXTRA_HEADERS, ("content-length", str(len(response.body)))]
    data = conn.send(h11.Response(status_code=response.status, headers=headers)) or b""
    if not head:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    writer.write(data)
    await writer.drain()


async def _next_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request, bytes] | None:
    """The next whole request on the connection, or None when the client is gone."""
    start: h11.Request | None = None
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await reader.read(READ_SIZE))
            continue
        if isinstance(event, h11.Request):
            start = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage) and start is not None:
            return start, bytes(body)
        elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            return None


async def serve_connection(
    api: SandboxAPI, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            try:
                received = await _next_request(conn, reader)
            except h11.RemoteProtocolError:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    bad = json_response(400, {"message": "Bad Request", "status": 400})
                    await _send(conn, writer, bad, head=False)
                return
            if received is None:
                return
            start, body = received
            request = Request(
                method=start.method.decode("ascii", "replace"),
                path=start.target.decode("latin-1").partition("?")[0],
                query=start.target.decode("latin-1").partition("?")[2],
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in start.headers],
                body=body,
            )
            response = api.handle(request)
            if response.delay_seconds > 0:
                await asyncio.sleep(response.delay_seconds)
            if response.drop:
                return
            await _send(conn, writer, response, head=request.method == "HEAD")
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.LocalProtocolError):
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def start_server(api: SandboxAPI, host: str, port: int) -> asyncio.Server:
    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled when the server stops: end quietly, or asyncio logs a traceback per
        # idle keep-alive connection.
        with contextlib.suppress(asyncio.CancelledError):
            await serve_connection(api, reader, writer)

    return await asyncio.start_server(on_connection, host, port, reuse_address=True, backlog=512)


def bound_port(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


@dataclass
class ServerHandle:
    """A sandbox running on its own thread and event loop."""

    url: str
    api: SandboxAPI
    _loop: asyncio.AbstractEventLoop
    _stopped: asyncio.Event
    _thread: threading.Thread

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=10)


def start_in_thread(
    api: SandboxAPI | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    base_url: str | None = None,
    configure: Callable[[SandboxAPI, str], None] | None = None,
) -> ServerHandle:
    """Serve ``api`` (default: a bare ``SandboxAPI``) in a daemon thread; ``port=0`` picks one.

    Shared-link URLs start with ``base_url``, by default the served URL.
    ``configure(api, url)`` runs once the port is known, before the first request is served,
    e.g. to set ``api.base_url`` or add teams and keys.
    """
    api = api or SandboxAPI()
    ready = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        stopped = asyncio.Event()

        async def main() -> None:
            server = await start_server(api, host, port)
            url = f"http://{host}:{bound_port(server)}"
            api.base_url = base_url or url
            if configure is not None:
                configure(api, url)
            holder.update(url=url, loop=loop, stopped=stopped)
            ready.set()
            async with server:
                await stopped.wait()
            # Close idle keep-alive connections too, or their tasks die pending with the loop.
            pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        try:
            loop.run_until_complete(main())
        except BaseException as exc:
            holder["error"] = exc
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="sandbox-server", daemon=True)
    thread.start()
    ready.wait(timeout=10)
    if "url" not in holder:
        raise RuntimeError(f"sandbox did not start: {holder.get('error')!r}")
    return ServerHandle(
        url=str(holder["url"]),
        api=api,
        _loop=holder["loop"],  # type: ignore[arg-type]
        _stopped=holder["stopped"],  # type: ignore[arg-type]
        _thread=thread,
    )
