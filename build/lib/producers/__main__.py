"""``python -m producers`` is the ``provision`` command."""

from producers.cli import main

main()
