"""`python -m edge_ai` runs the `edge-ai` command."""

from edge_ai.cli.main import main

main()
