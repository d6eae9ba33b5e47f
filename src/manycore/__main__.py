"""``python -m manycore``: the same as the ``manycore`` command."""

from ._cli import main

raise SystemExit(main())
