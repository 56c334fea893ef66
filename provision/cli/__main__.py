"""``python -m provision.cli`` is the ``provision`` command."""

from provision.cli import main

main()
