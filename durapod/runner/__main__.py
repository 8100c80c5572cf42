"""``python -m durapod.runner``: the command of every task pod."""

from durapod.runner.entrypoint import main

main()
