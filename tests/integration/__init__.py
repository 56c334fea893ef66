"""Tests on real services and processes: Redis, PostgreSQL, RabbitMQ, ``provision worker`` and
``provision serve``, faults included (SIGKILL, outages, chaos). Imports the product and
``testkit``; a test that stops a service starts a private one."""
