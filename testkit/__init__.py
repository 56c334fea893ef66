"""What the tests and the benchmarks share: the sandbox as a process and clients of it (raw HTTP
and ``PlausibleClient``), the API reference's texts, the machine's services, private Redis and
PostgreSQL servers, worker stacks, fakes, a clock, a deadline-bounded wait, and the docs as
the tests read them.

Imports the product's packages and pytest; nothing imports it but ``tests/`` and
``benchmarks/``. Not part of the wheel.
"""
