"""``python -m agentflow_env.evaluate``: benchmark a planner as a policy.

A thin entry point: the evaluation lives in :mod:`agentflow_env.eval` (config, build, run,
report, cli), which also holds the public API (``EvalConfig``, ``run``).
"""

import sys

from agentflow_env.eval.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
