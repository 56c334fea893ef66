"""``python -m producers.cli`` is the ``provision`` command."""

from producers.cli import main

main()
