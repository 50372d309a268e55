"""``python -m openmaas`` runs the CLI."""

from __future__ import annotations

from openmaas.cli import main

main()
