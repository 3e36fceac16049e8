"""``python -m agentflow_env.view``: trajectories (JSONL) as a self-contained HTML timeline.

A thin entry point: the viewer lives in :mod:`agentflow_env.eval.view`.
"""

import sys

from agentflow_env.eval.view import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
