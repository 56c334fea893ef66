"""``python -m provision`` is the ``provision`` command."""

from provision.cli import main

main()
