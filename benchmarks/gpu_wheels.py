"""The wheels the GPU check needs beyond CUDA PyTorch and transformers: list, download, size check.

A GPU machine of the kind ``python -m benchmarks.gpu`` is made for has Python 3.12 with CUDA
torch and transformers (and accelerate, numpy, rich, psutil, tokenizers, safetensors,
tensorboard, pandas, pyarrow, ...) but none of this project's other dependencies, and maybe no
network. What the check's code path imports beyond those (the trainer, the offline Search env):
:data:`REQUIRED`; section (e) also needs :data:`TRL_EXTRA`. Versions are the tested pins of
``.ci/constraints.txt``; wheels are fetched for CPython 3.12 on manylinux x86_64 (pure-Python ones
where they exist), without dependencies (each needed one is named here).

    python -m benchmarks.gpu_wheels --list                  # NAME==VERSION, one a line
    python -m benchmarks.gpu_wheels --dest .whl             # download them, then check the size
    python -m benchmarks.gpu_wheels --check .whl            # check only: wheels + project <= 64 MiB

Then, on the GPU machine, in the repository root::

    python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site python3 -m benchmarks.gpu

Exit status: 0 when every wheel is there and the total fits, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
LIMIT_BYTES = 64 * 2**20
"""what may be brought to the GPU machine: the project's files and the wheels together"""

REQUIRED: tuple[str, ...] = (
    "gymnasium",
    "Farama-Notifications",
    "pydantic",
    "pydantic_core",
    "annotated-types",
    "typing-inspection",
    "typing_extensions",  # pydantic 2.14 needs >= 4.16, newer than such images may hold
    "bm25s",
    "PyStemmer",
)
"""imported by learners + the offline env and absent from a CUDA PyTorch image"""

TRL_EXTRA: tuple[str, ...] = ("trl", "datasets", "dill", "multiprocess")
"""section (e), TRL's GRPO loss (pandas, pyarrow, xxhash, fsspec come with such images)"""

PLATFORMS: tuple[str, ...] = (
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)

_SKIP_DIRS = {".git", ".venv", "__pycache__", "runs", ".pytest_cache", ".hypothesis"}


def normalize(name: str) -> str:
    """A distribution name as wheel files and pip compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(with_trl: bool = True, constraints: Path = CONSTRAINTS) -> list[str]:
    """``NAME==VERSION`` of every wheel needed, versions from the constraints file."""
    versions: dict[str, str] = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            versions[normalize(name)] = version.split(";")[0].strip()
    names = REQUIRED + (TRL_EXTRA if with_trl else ())
    missing = [n for n in names if normalize(n) not in versions]
    if missing:
        raise KeyError(f"{constraints} pins no version of {missing}")
    return [f"{n}=={versions[normalize(n)]}" for n in names]


def wheel_name(path: Path) -> str:
    """The normalized distribution name of a wheel file (``name-version-...whl``)."""
    return normalize(path.name.split("-", 1)[0])


def project_bytes(root: Path = ROOT) -> int:
    """Bytes of the files that travel with the project: git's tracked and untracked-not-ignored
    files in a checkout, else every file outside caches and virtual environments."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.split(b"\0")
        files = [root / os.fsdecode(f) for f in listed if f]
    except (OSError, subprocess.SubprocessError):
        files = list(_walk(root))
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        yield from (Path(folder) / n for n in names)


def check(wheel_dir: Path, with_trl: bool = True, root: Path = ROOT) -> tuple[bool, list[str]]:
    """Whether every needed wheel is in ``wheel_dir`` and all fits in 64 MiB; report lines."""
    wheels = sorted(wheel_dir.glob("*.whl"))
    have = {wheel_name(w) for w in wheels}
    needed = REQUIRED + (TRL_EXTRA if with_trl else ())
    missing = [n for n in needed if normalize(n) not in have]
    wheel_total = sum(w.stat().st_size for w in wheels)
    proj = project_bytes(root)
    total = wheel_total + proj
    lines = [f"{w.stat().st_size / 2**20:8.2f} MiB  {w.name}" for w in wheels]
    lines += [
        f"{wheel_total / 2**20:8.2f} MiB  wheels ({len(wheels)})",
        f"{proj / 2**20:8.2f} MiB  project files ({root})",
        f"{total / 2**20:8.2f} MiB  total, limit {LIMIT_BYTES / 2**20:.0f} MiB",
    ]
    if missing:
        lines.append(f"missing wheels: {', '.join(missing)}")
    ok = not missing and total <= LIMIT_BYTES
    lines.append("OK" if ok else "NOT OK")
    return ok, lines


def download(dest: Path, with_trl: bool = True, python_version: str = "3.12") -> None:
    """Fetch the pinned wheels for CPython ``python_version`` on manylinux x86_64 into ``dest``
    (needs the package registry; the machine running this may be of any kind)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + pins(with_trl), check=True, timeout=900)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="print NAME==VERSION of each wheel")
    what.add_argument("--dest", type=Path, help="download the wheels here, then check the size")
    what.add_argument("--check", type=Path, metavar="DIR", help="only check the wheels in DIR")
    parser.add_argument("--no-trl", action="store_true", help="leave out section (e)'s wheels")
    parser.add_argument(
        "--python-version", default="3.12", help="the GPU machine's Python (default 3.12)"
    )
    args = parser.parse_args(argv)
    with_trl = not args.no_trl
    if args.list:
        sys.stdout.write("\n".join(pins(with_trl)) + "\n")
        return 0
    wheel_dir = args.dest or args.check
    if args.dest is not None:
        try:
            download(args.dest, with_trl, args.python_version)
        except subprocess.CalledProcessError as exc:
            sys.stderr.write(f"pip download failed (exit {exc.returncode}); see its output above\n")
            return 1
    elif not wheel_dir.is_dir():
        parser.error(f"{wheel_dir} is not a directory")
    ok, lines = check(wheel_dir, with_trl)
    sys.stdout.write("\n".join(lines) + "\n")
    if ok:
        sys.stdout.write(
            "\non the GPU machine, in the repository root:\n"
            f"  python3 -m pip install --no-index --no-deps --target /tmp/site {wheel_dir}/*.whl\n"
            "  PYTHONPATH=/tmp/site python3 -m benchmarks.gpu\n"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
