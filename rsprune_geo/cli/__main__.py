"""``python -m rsprune_geo.cli``: the ``rsprune`` command."""

from . import main

main()
