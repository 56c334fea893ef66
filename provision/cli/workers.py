"""``provision workers``: the live worker processes, from the registry their heartbeats keep."""

from __future__ import annotations

import json

import click

from provision.cli import main


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON: a list of processes.")
def workers(as_json: bool) -> None:
    """List the worker processes that run jobs: host, pid, started, last heartbeat, running
    jobs. A process silent past PROVISIONER_HEARTBEAT_TIMEOUT_SECONDS is taken for dead by the
    others, which hand its jobs back and drop it from this list."""
    from provision.views import workers_table
    from provision.wiring import make_store
    from worker.settings import get_settings

    store = make_store(get_settings())
    try:
        processes = store.processes()
    finally:
        store.engine.dispose()
    if as_json:
        rows = [
            {
                "id": p.id,
                "host": p.host,
                "pid": p.pid,
                "started": p.started.isoformat(),
                "last_heartbeat": p.last_heartbeat.isoformat(),
                "running_jobs": p.running_jobs,
            }
            for p in processes
        ]
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(workers_table(processes, now=store.clock()))
