"""``python -m herald`` is the ``herald`` command."""

from herald.cli import main

main()
