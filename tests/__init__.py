"""The test suite, in tiers by what a test needs: ``unit`` (this process only), ``sandbox`` (the
fake Plausible over HTTP), ``integration`` (real Redis, PostgreSQL, RabbitMQ and worker
processes), ``acceptance`` (the ``provision`` command as a user runs it, the wheel, the browser).
Support code lives in ``testkit``; tests import it and the product, never each other."""
