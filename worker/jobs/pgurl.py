"""The status database's URL, a SQLAlchemy URL, as the parameters psycopg connects with, for
the connections made outside the engine: ``rows`` (``provision status``, which must not import
SQLAlchemy) and ``worker.wakeups`` (LISTEN/NOTIFY). SQLAlchemy's own reading is the reference:
``tests/unit/test_pgurl.py`` holds the two side by side.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

#: A ``?host=`` that SQLAlchemy's dialect splits into a host and a port (``?host=h:5433``).
_HOST_WITH_PORT = re.compile(r"[a-zA-Z0-9.-]*:\d*")


def psycopg_params(database_url: str) -> dict[str, str] | None:
    """The keyword parameters SQLAlchemy's psycopg dialect connects with for ``database_url``
    (``postgresql://`` or ``postgresql+DRIVER://``); None for a URL of another database, or one
    only SQLAlchemy reads: its multi-host forms (``?host=h1:5432&host=h2:5433``,
    ``?host=h:5433``; libpq's own, ``?host=h1,h2&port=5432,5433``, is read here), or what libpq
    does not parse.

    libpq reads what stands before the query (``conninfo_to_dict``): the user, password, hosts,
    ports and database, percent-decoded, an IPv6 host in brackets, a unix socket's directory
    percent-encoded in the host. The query is read as SQLAlchemy reads it, as form data (``+`` a
    space, which libpq would keep), and wins over the URL's parts (``?host=/run/postgresql``).
    Parts the URL leaves out are left to libpq's defaults (``PGHOST``, port 5432...).
    """
    scheme, found, rest = database_url.partition("://")
    if not found or scheme.partition("+")[0] != "postgresql":
        return None
    location, _, query = rest.partition("?")
    options = parse_qsl(query)
    names = [name for name, _ in options]
    if len(set(names)) < len(names):
        return None  # a name given twice (``?host=h1&host=h2``): SQLAlchemy's to join
    hosts = [value for name, value in options if name == "host"]
    if hosts and "port" not in names and _HOST_WITH_PORT.fullmatch(hosts[0]):
        return None
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(f"postgresql://{location}")
    except ProgrammingError:
        return None
    # An empty part (``user:@host``) is no part, as SQLAlchemy leaves it out.
    params = {name: str(value) for name, value in parts.items() if value}
    params.update(options)
    return params


def psycopg_conninfo(database_url: str | None, **defaults: str) -> str | None:
    """libpq's connection string for ``database_url`` (``psycopg_params``), over ``defaults``
    (the URL's own parameters win); None where ``psycopg_params`` gives none, or for a query
    option libpq does not know (one only the engine reads)."""
    params = psycopg_params(database_url) if database_url else None
    if params is None:
        return None
    from psycopg import ProgrammingError
    from psycopg.conninfo import make_conninfo

    try:
        return make_conninfo(**{**defaults, **params})
    except ProgrammingError:
        return None
