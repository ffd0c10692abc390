"""Read registers with mbpoll, a real third-party Modbus master, so our simulator is judged by an outsider.

`read_floats` blocks while mbpoll runs: when the simulator serves from the test's own event loop, call it
through ``await asyncio.to_thread(read_floats, ...)`` or the simulator cannot answer.
"""

from __future__ import annotations

import re
import subprocess

from app.processes import require_binary

_VALUE_LINE = re.compile(r"^\[(\d+)\]:\s+(\S+)\s*$")


class MbpollError(RuntimeError):
    """mbpoll failed; the message carries its stderr (e.g. "Illegal data address")."""


def read_floats(host: str, port: int, unit: int, address0: int, count: int, *, table: int = 3) -> list[float]:
    """Read `count` big-endian float32 values starting at 0-based wire `address0` of `unit` over Modbus TCP.

    `table` is mbpoll's: 3 = input registers (function 04), 4 = holding registers (function 03).
    """
    return _read_floats(["-m", "tcp", "-p", str(port), "-o", "5"], host, unit, address0, count, table)


def read_floats_rtu(
    device: str,
    unit: int,
    address0: int,
    count: int,
    *,
    baud: int = 9600,
    parity: str = "none",
    table: int = 3,
    timeout_s: float = 5,
) -> list[float]:
    """As :func:`read_floats`, over Modbus RTU on serial `device` (`parity`: none, even or odd)."""
    mode = ["-m", "rtu", "-b", str(baud), "-P", parity, "-o", str(timeout_s)]
    return _read_floats(mode, device, unit, address0, count, table)


def _read_floats(
    mode: list[str], target: str, unit: int, address0: int, count: int, table: int
) -> list[float]:
    args = [
        require_binary("mbpoll"), *mode, "-a", str(unit),
        "-t", f"{table}:float", "-B", "-0", "-r", str(address0), "-c", str(count), "-1", target,
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    values = {
        int(m.group(1)): float(m.group(2))
        for line in result.stdout.splitlines()
        if (m := _VALUE_LINE.match(line.strip()))
    }
    expected = [address0 + 2 * i for i in range(count)]
    if result.returncode != 0 or sorted(values) != expected:
        output = result.stderr.strip() or result.stdout
        raise MbpollError(f"mbpoll {' '.join(args[1:])} exited {result.returncode}: {output}")
    return [values[a] for a in expected]
