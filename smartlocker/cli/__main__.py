"""``python -m smartlocker.cli`` runs the ``smartlocker`` program."""

from smartlocker.cli import main

main()
