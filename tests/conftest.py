"""The tiers, one folder each: ``unit`` (in-process), ``sandbox`` (the sandbox over HTTP),
``integration`` (real worker processes on the local Redis, PostgreSQL and RabbitMQ) and
``acceptance`` (the CLI as a user runs it, the wheel, the compose file, the browser). Shared
fixtures live in ``testkit.plugin``."""

pytest_plugins = ["testkit.plugin"]
