"""``python -m tools.mcp``: serve this project's tools over MCP, or list a server's tools
(see :mod:`tools.mcp.cli`)."""

import sys

from tools.mcp.cli import main

sys.exit(main())
