"""`kilowatch demo` (what `make demo` runs) works with Mosquitto and with the embedded fallback broker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from app.processes import free_port, require_binary


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_runs_every_part_and_prints_the_urls(tmp_path: Path, broker: str) -> None:
    if broker == "mosquitto":
        require_binary("mosquitto")  # fails, never skips, when it is missing
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "app", "demo", "--broker", broker, "--workdir", str(tmp_path),
         "--api-port", str(port), "--poll-interval", "1", "--duration", "4"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert ("embedded amqtt broker" in out) is (broker == "embedded")
    assert "3 meters reporting" in out
    # The web app's opening page: the demo site's day with the after-hours alert raised from its history.
    assert re.search(rf"http://127.0.0.1:{port}/sites/demo-office\?day=\d{{4}}-\d\d-\d\d\n", out), out
    assert re.search(r"air conditioning has been on since 19:00: alert #\d+, \d+ kWh wasted", out), out
    assert "Log in to the web app as 'admin' with password '" in out
    for path in ("/api/v1/meters", "/api/v1/meters/main/latest", "/api/v1/meters/main/intervals", "/docs"):
        assert f"http://127.0.0.1:{port}{path}\n" in out
    assert re.search(
        r"\n\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  main: \d+\.\d\d kW, \d+\.\d{3} kWh imported\n", out
    ), out
    assert (tmp_path / "ledger.db").stat().st_size > 0
    for log in ("agent.log", "collector.log", "sim.log"):
        assert "Traceback" not in (tmp_path / log).read_text(), log


def test_sigterm_stops_the_demo_and_every_part_it_started(tmp_path: Path) -> None:
    """systemd, `kill` or a CI timeout end the demo with SIGTERM: it stops its broker, simulator, agent and
    collector on the way out instead of leaving them running."""
    require_binary("mosquitto")
    demo = subprocess.Popen(
        [sys.executable, "-m", "app", "demo", "--broker", "mosquitto", "--workdir", str(tmp_path),
         "--api-port", str(free_port()), "--poll-interval", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    seen = []
    for line in demo.stdout:  # ends when the demo exits
        seen.append(line)
        if re.search(r"main: \d+\.\d\d kW", line):
            break
    assert parts_running(tmp_path), "".join(seen)
    demo.send_signal(signal.SIGTERM)
    seen.extend(demo.stdout)
    assert demo.wait(timeout=60) == 0, "".join(seen)
    assert "stopped" in seen[-1]
    left = parts_running(tmp_path)
    for pid, _ in left:  # so that a failure leaves nothing running either
        os.kill(pid, signal.SIGKILL)
    assert left == []


def parts_running(workdir: Path) -> list[tuple[int, str]]:
    """The processes that run with files of `workdir` (the demo's parts): pid and command line."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        if any(str(workdir).encode() in arg for arg in args) and b"pytest" not in args[0]:
            found.append((int(cmdline.parent.name), b" ".join(args).decode(errors="replace")))
    return found
