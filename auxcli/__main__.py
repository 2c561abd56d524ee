"""`python -m auxcli` (and `torchrun -m auxcli`) runs the CLI."""

from auxcli.cli import main

main()
