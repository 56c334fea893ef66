"""The ``provision`` command line."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="plausible-provisioner")
def main() -> None:
    """Provision websites on Plausible Analytics, exactly once."""


def _register() -> None:
    from sandbox.cli import sandbox_command

    main.add_command(sandbox_command)


_register()
