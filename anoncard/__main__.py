"""``python -m anoncard`` runs the command line."""

from cli.main import main

main()
