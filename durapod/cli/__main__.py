"""``python -m durapod.cli``: the same as the ``durapod`` command."""

from durapod.cli.main import main

main()
