"""Build the offline agent bundle for Raspberry Pi OS (Debian bookworm, Python 3.11): `make wheelhouse`.

For each target (arm64, armhf) it downloads the wheels of the `agent` extra's dependencies built for that
platform, adds kilowatch's own wheel, the installer, the agent's unit and the sample config, and packs
``dist/kilowatch-agent-<target>.tar.gz``. A technician copies that to the gateway and runs
``sudo ./install-agent.sh`` from the unpacked folder, with no network.

A dependency without a wheel for a target is reported with what to do, and the target is left incomplete
(exit 1): a Pi must never have to compile on site. ``--target host`` builds the bundle for this machine
(the install test uses it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GLIBC = (36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 17)
"""bookworm has glibc 2.36: it runs manylinux wheels for 2.36 and every older one."""

TARGETS: dict[str, list[str]] = {
    "arm64": [f"manylinux_2_{minor}_aarch64" for minor in GLIBC] + ["manylinux2014_aarch64", "linux_aarch64"],
    "armhf": [f"manylinux_2_{minor}_armv7l" for minor in GLIBC] + ["manylinux2014_armv7l", "linux_armv7l"],
    "host": [],
}
"""pip's --platform tags per target; none for host (pip's own)."""

PYTHON = [
    "--python-version",
    "3.11",
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--abi",
    "abi3",
    "--abi",
    "none",
]

BUNDLED = {
    "deploy/install-agent.sh": "install-agent.sh",
    "deploy/systemd/kilowatch-agent.service": "systemd/kilowatch-agent.service",
    "deploy/agent.example.yaml": "agent.example.yaml",
}
"""Files of the checkout the installer needs, and where they go in the bundle."""


def requirements() -> list[str]:
    """The base dependencies plus the `agent` extra, from pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["agent"]]


def download(requirement: str, folder: Path, target: str) -> str | None:
    """Fetch `requirement` and its dependencies as wheels into `folder`; the name of the distribution
    that has no wheel for `target`, or None when all do."""
    platforms = [arg for tag in TARGETS[target] for arg in ("--platform", tag)]
    pinned = [*PYTHON, *platforms] if platforms else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(folder),
            *pinned,
            requirement,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == 0:
        return None
    missing = re.search(r"No matching distribution found for (\S+)", result.stderr)
    if missing is None:
        raise SystemExit(f"pip download {requirement} for {target} failed:\n{result.stderr}")
    return missing[1]


def advice(missing: str, target: str) -> str:
    """What a release engineer does about a dependency with no wheel for `target`."""
    return (
        f"{target}: no wheel of {missing} for Python 3.11 on this platform. Build it once on a Raspberry Pi "
        f"of this kind (`python3 -m pip wheel '{missing}' -w wheels/`) or take it from the piwheels index, "
        f"and add it to the bundle's folder before packing; or install the Debian package of the same "
        f"library on the gateway (`apt-get install python3-<name>`) and create the venv with "
        f"--system-site-packages."
    )


def build(target: str, out: Path) -> list[str]:
    """Assemble and pack the bundle for `target` under `out`; the problems found (empty when complete)."""
    folder = out / f"kilowatch-agent-{target}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "systemd").mkdir(parents=True)
    problems = [advice(m, target) for r in requirements() if (m := download(r, folder, target)) is not None]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(folder), str(ROOT)],
        check=True,
    )
    for source, name in BUNDLED.items():
        shutil.copy2(ROOT / source, folder / name)
    with tarfile.open(out / f"kilowatch-agent-{target}.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(TARGETS), action="append", help="default: arm64 and armhf")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "wheelhouse")
    args = parser.parse_args()
    problems = [p for target in args.target or ["arm64", "armhf"] for p in build(target, args.out)]
    for problem in problems:
        print(f"missing wheel: {problem}", file=sys.stderr)
    print(f"bundles in {args.out}" + (f"; {len(problems)} incomplete (see above)" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
