"""`python -m edge_ai` runs the `edge-ai` command."""

from edge_ai.cli import main

main()
