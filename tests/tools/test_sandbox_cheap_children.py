"""Cheaper children with the same isolation: the fork server's memory in huge pages
(tools/sandbox/hugepages.py), and what the worker prepares for each child before the fork (its
environment, the snippet's output streams); what must still hold with them in a real pool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools.python_coder import PythonCoderTool

SANDBOX_DIR = Path(__file__).resolve().parents[2] / "tools" / "sandbox"
HAS_BWRAP = shutil.which("bwrap") is not None
LEVEL = "strict" if HAS_BWRAP else "process"


def _thp_mode() -> str | None:
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    return text[text.index("[") + 1 : text.index("]")]


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


CAN_COLLAPSE = _thp_mode() not in (None, "never") and _kernel_at_least(6, 1)
NO_COLLAPSE = "needs MADV_COLLAPSE: Linux >= 6.1 with transparent huge pages not 'never'"


def _probe(code: str) -> list[str]:
    """Run ``code`` in a fresh single-threaded interpreter with the sandbox modules importable."""
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            "import sys\nsys.path.insert(0, sys.argv[1])\n" + code,
            str(SANDBOX_DIR),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_anonymous_regions_are_the_writable_private_unnamed_mappings() -> None:
    sys.path.insert(0, str(SANDBOX_DIR))
    try:
        import hugepages
    finally:
        sys.path.remove(str(SANDBOX_DIR))
    maps = "\n".join(
        [
            "55d0a000-55d0c000 r--p 00000000 08:01 123 /usr/bin/python3.11",
            "55d0c000-55e0c000 rw-p 00000000 00:00 0 [heap]",
            "7f0000000000-7f0000400000 rw-p 00000000 00:00 0 ",
            "7f0000400000-7f0000600000 rw-s 00000000 00:01 9 /dev/shm/x",
            "7f0000600000-7f0000800000 rw-p 00001000 08:01 77 /usr/lib/libc.so.6",
            "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]",
            "7f0000800000-7f0000a00000 ---p 00000000 00:00 0 ",
        ]
    )
    assert hugepages._anonymous_regions(maps) == [
        (0x55D0C000, 0x55E0C000),
        (0x7F0000000000, 0x7F0000400000),
    ]


@pytest.mark.skipif(not CAN_COLLAPSE, reason=NO_COLLAPSE)
def test_collapse_moves_anonymous_memory_to_huge_pages_and_keeps_its_contents() -> None:
    lines = _probe(
        "import hugepages, hashlib, os\n"
        "data = bytearray(os.urandom(1 << 20) * 24)  # 24 MiB, written: really backed\n"
        "digest = hashlib.sha256(data).hexdigest()\n"
        "before = hugepages.huge_anonymous_kb()\n"
        "after = hugepages.collapse_to_huge_pages()\n"
        "print(before, after, hashlib.sha256(data).hexdigest() == digest)\n"
    )
    before, after, same = lines[0].split()
    assert int(after) >= int(before) + 16 * 1024, lines  # most of the 24 MiB
    assert same == "True"


def test_pool_reports_and_keeps_its_isolation_with_huge_pages() -> None:
    """The default pool's workers keep their memory in huge pages where the kernel can; that can
    be turned off; calls give the same results both ways, and a seed never crosses calls."""
    snippets = [
        "print(sum(range(1000)))",
        "import threading\nt = threading.Thread(target=print, args=('thread',))\n"
        "t.start(); t.join()\nprint(threading.main_thread().ident == threading.get_ident())",
        "import os\npid = os.fork()\nif pid == 0:\n    os._exit(3)\n"
        "print(os.waitpid(pid, 0)[1] >> 8)",
        "import os, sys\nprint(os.getcwd().startswith(os.environ['HOME']), sys.argv)",
        "import sys\nfor s in (sys.stdout, sys.stderr):\n"
        "    print(s.fileno(), s.seekable(), s.isatty(), s.encoding, s.errors, s.write_through)\n"
        "print(sys.stdout is sys.__stdout__, sys.stdin.read())",
    ]
    outputs = {}
    for huge in (True, False):
        with PythonCoderTool(isolation=LEVEL, pool_size=1, timeout_s=10, huge_pages=huge) as tool:
            features = tool._backend.pool.features
            if huge and CAN_COLLAPSE:
                assert features["huge_pages_kb"] >= 8 * 1024
            if not huge:
                assert features["huge_pages_kb"] == 0
            seeded = tool.execute(code="import random\nrandom.seed(3)\nprint(random.random())")
            draws = {
                tool.execute(code="import random\nprint(random.random())").data["stdout"]
                for _ in range(4)
            }
            assert seeded.ok and len(draws) == 4 and seeded.data["stdout"] not in draws
            outputs[huge] = [tool.run(code).stdout for code in snippets]
    assert outputs[True] == outputs[False]
    assert outputs[True][:3] == ["499500\n", "thread\nTrue\n", "3\n"]
    assert outputs[True][4].splitlines() == [
        "1 False False utf-8 backslashreplace True",
        "2 False False utf-8 backslashreplace True",
        "True ",
    ]


def test_output_streams_are_built_ahead_only_over_pipes() -> None:
    """The worker builds the snippet's stdout and stderr once when its own fds 1 and 2 are pipes,
    as every child's are; anything else, and each child builds its own."""
    code = (
        "import sys\nsys.path.insert(0, sys.argv[1])\nimport runner\n"
        "streams = runner.output_streams()\n"
        "print(streams is not None and [s.fileno() for s in streams], file=sys.stderr)\n"
    )
    for stdout, expected in ((subprocess.PIPE, "[1, 2]"), (subprocess.DEVNULL, "False")):
        proc = subprocess.run(
            [sys.executable, "-I", "-c", code, str(SANDBOX_DIR)],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=True,
        )
        assert proc.stderr.strip() == expected


def test_each_call_sees_exactly_the_sandbox_environment_with_its_own_directory() -> None:
    """The worker sets its own environment for the next call before each fork (the child no
    longer rebuilds it): still exactly SANDBOX_ENV plus the call's HOME, TMPDIR and PWD, and a
    variable one call sets is gone in the next."""
    from tools.sandbox.launcher import SANDBOX_ENV

    probe = (
        "import json, os\n"
        "print(json.dumps(dict(os.environ)))\n"
        "print(os.getcwd())\n"
        "os.environ['LEFT_BEHIND'] = '1'\n"
        "os.putenv('LEFT_BEHIND_TOO', '1')\n"
    )
    with PythonCoderTool(isolation=LEVEL, pool_size=1, timeout_s=10) as tool:
        seen = [tool.run(probe).stdout.splitlines() for _ in range(3)]
    homes = set()
    for env_text, cwd in seen:
        env = json.loads(env_text)
        assert env == {**SANDBOX_ENV, "HOME": cwd, "TMPDIR": cwd, "PWD": cwd}
        homes.add(cwd)
    assert len(homes) == 3  # a directory of its own for each call
