"""The status table: what a job is, where it stands, and every transition of it.

One module per audience, each an interface to the same table, so the type checker says who may
touch what:

- ``states`` (the enums and status sets), ``specs`` (a job's request and progress), ``models``
  (the tables), ``db`` and ``migrations`` (engines and the schema);
- ``intake`` (producers enqueue), ``claims`` (the pipeline's lease, checkpoints and outcome),
  ``dispatch`` (the scheduler admits), ``recovery`` (the sweeper hands back), ``counts`` (the
  quota report), ``queries`` (readers), ``actions`` (operators retry and cancel), ``outbox``
  (completion webhooks), ``registry`` (worker processes and their heartbeats); ``table`` is what they share, ``store`` composes them all;
- ``view``: builds the one public shape of a job and a batch, the models of
  ``provisioner_types``, from the rows;
- ``rows``: a job read with the database's own driver, without SQLAlchemy (``provision
  status``), ``pgurl``: the status database's URL as psycopg's connection parameters (``rows``,
  ``worker.wakeups``), and ``revisions``: the schema revision the code needs, from the migration
  scripts.

Imports ``worker.errors``, ``worker.times``, ``worker.webhooks`` (the body of an outbox row),
``worker.dispatch`` (the class of a job's message) and the leaf packages; nothing else of ours.
"""
