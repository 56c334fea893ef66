"""The composition root: the ``provision`` command, the HTTP service and the dashboard.

The one place that starts processes and wires the parts together. It may import ``worker``,
``producers``, ``sandbox`` and the leaf packages; nothing imports it.
"""
