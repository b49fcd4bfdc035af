"""`python -m safeladder` runs the CLI."""

from safeladder.cli import main

main()
