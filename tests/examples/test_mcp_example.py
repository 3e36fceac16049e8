"""examples/mcp_tools.py runs as a user would run it (from a checkout) and says what it should."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.examples.test_examples import ROOT

pytest.importorskip("mcp", reason="the MCP SDK is not installed: pip install 'agentflow-gym[mcp]'")


def test_mcp_example_both_directions() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mcp_tools.py")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},  # this checkout's packages
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert '{"value": <number>, "unit_from": <string>, "unit_to": <string>}' in out
    assert "define: an eighth of a mile, 201.168 m" in out
    assert "'forty-two' is not of type 'number' (at value)" in out
    assert "convert: 26.098 mi" in out and "reward 1.0" in out
    assert "sandbox said: Printed output:\n1024" in out and "no network: True" in out
