"""``python -m fb``: the ``fb`` command line."""

from .cli import main

main(prog_name="fb")
