"""``python -m manycore``: the same as the ``manycore`` command."""

from manycore._cli._main import main

raise SystemExit(main())
