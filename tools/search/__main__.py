"""``python -m tools.search``: the search index CLI (see :mod:`tools.search.cli`)."""

import sys

from tools.search.cli import main

sys.exit(main())
