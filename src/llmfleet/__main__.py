"""``python -m llmfleet`` runs the CLI."""

from llmfleet.cli import main

main()
