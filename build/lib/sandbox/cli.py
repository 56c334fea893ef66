"""``provision sandbox``: run the sandbox Sites API on a local port until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from sandbox.api import SandboxAPI
from sandbox.server import bound_port, start_server
from sandbox.state import FEATURES, SITES_API_SCOPE, STATS_API_SCOPE, Settings


def build_api(
    *,
    api_keys: tuple[str, ...],
    stats_api_key: str | None,
    other_team_api_key: str | None,
    settings: Settings,
    seed: int | None,
    site_limit: int | None,
    base_url: str,
) -> SandboxAPI:
    """The sandbox with its start-up teams and keys, which ``/_sandbox/reset`` keeps."""
    api = SandboxAPI(settings=settings, seed=seed, base_url=base_url)
    team = api.add_team("Sandbox", set(FEATURES), site_limit=site_limit)
    for key in api_keys or ("sandbox-key",):
        api.add_key(key, team, "owner", [SITES_API_SCOPE])
    if stats_api_key:
        api.add_key(stats_api_key, team, "owner", [STATS_API_SCOPE])
    if other_team_api_key:
        other = api.add_team("Other team", set(FEATURES))
        api.add_key(other_team_api_key, other, "owner", [SITES_API_SCOPE])
    api.freeze_initial_state()
    return api


async def _serve(api: SandboxAPI, host: str, port: int, base_url: str | None) -> None:
    server = await start_server(api, host, port)
    actual = bound_port(server)
    url = f"http://{host}:{actual}"
    api.base_url = base_url or url
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    click.echo(f"sandbox listening on {url}")
    sys.stdout.flush()
    async with server:
        await stop.wait()


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int, help="0 picks a free port.")
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    metavar="KEY",
    help="Sites API key on the default team (repeatable; default sandbox-key).",
)
@click.option(
    "--stats-api-key", metavar="KEY", help="A key with only the Stats API scope, same team."
)
@click.option("--other-team-api-key", metavar="KEY", help="A Sites API key of another team.")
@click.option("--hourly-limit", default=600, show_default=True, type=int)
@click.option("--burst-limit", default=60, show_default=True, type=int)
@click.option("--burst-seconds", default=10.0, show_default=True, type=float)
@click.option(
    "--hour-seconds",
    default=3600.0,
    show_default=True,
    type=float,
    help="Length of the hourly window.",
)
@click.option("--latency-ms", default=0.0, type=float, help="Delay before every API response.")
@click.option(
    "--clock-offset-ms",
    default=0.0,
    type=float,
    help="Run the sandbox's clock (its rate-limit windows) this far ahead of the host's; negative: behind.",
)
@click.option(
    "--fail-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of requests answered 500 without effect.",
)
@click.option(
    "--drop-rate",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Share of requests carried out, then left unanswered.",
)
@click.option("--seed", type=int, help="Seed ids and faults for repeatable runs.")
@click.option(
    "--site-limit", type=int, help="Sites allowed on the default team (default unlimited)."
)
@click.option("--base-url", help="Base of shared-link URLs (default http://HOST:PORT).")
def sandbox_command(
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    stats_api_key: str | None,
    other_team_api_key: str | None,
    hourly_limit: int,
    burst_limit: int,
    burst_seconds: float,
    hour_seconds: float,
    latency_ms: float,
    clock_offset_ms: float,
    fail_rate: float,
    drop_rate: float,
    seed: int | None,
    site_limit: int | None,
    base_url: str | None,
) -> None:
    """Run a local, in-memory Plausible Sites API (admin routes under /_sandbox/)."""
    settings = Settings(
        hourly_limit=hourly_limit,
        burst_limit=burst_limit,
        burst_seconds=burst_seconds,
        hour_seconds=hour_seconds,
        fail_rate=fail_rate,
        drop_rate=drop_rate,
        latency_ms=latency_ms,
        clock_offset_ms=clock_offset_ms,
    )
    api = build_api(
        api_keys=api_keys,
        stats_api_key=stats_api_key,
        other_team_api_key=other_team_api_key,
        settings=settings,
        seed=seed,
        site_limit=site_limit,
        base_url=base_url or f"http://{host}:{port}",
    )
    asyncio.run(_serve(api, host, port, base_url))
