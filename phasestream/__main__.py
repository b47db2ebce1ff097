"""`python -m phasestream` is the `phasestream` command."""

from phasestream.cli import main

main()
