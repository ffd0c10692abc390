"""Web app benchmark: how long the first page takes to render in Chromium, on the demo's collector.

Run from the repository root: ``.venv/bin/python bench/web.py [--runs 20] [--screenshots DIR]``.

Starts ``kilowatch demo`` (simulator, agent, Mosquitto, collector with its week of history and its alert)
in a temporary folder, logs in with the password it prints, then loads each page ``--runs`` times in
Debian's headless Chromium (``/usr/bin/chromium``, driven by Playwright) and prints, per page, the median and
the slowest of: the server's answer (navigation timing's responseEnd) and the page fully loaded
(loadEventEnd: stylesheet, scripts and chart library loaded, the chart drawn), and the first load of each
page apart (nothing of it in the browser's cache yet). Nothing is asserted; the goal of issue 15 is
the overview rendered in under a second. With ``--screenshots`` every page is also saved there, in both
languages, on a desktop and a phone screen.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from app.processes import free_port

CHROMIUM = "/usr/bin/chromium"
TIMING = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  return {response: nav.responseEnd, load: nav.loadEventEnd};
}"""


def start_demo(workdir: Path, port: int) -> tuple[subprocess.Popen[str], str, str]:
    """The demo's process, the web app's opening page and the admin's password, once it is serving."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "app", "demo", "--workdir", str(workdir), "--api-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    printed = ""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            raise RuntimeError(f"the demo stopped:\n{printed}")
        printed += line
        if found := re.search(r"as 'admin' with password '([^']+)'", line):
            opening = re.search(r"(http://\S+/sites/\S+)", printed)
            assert opening is not None, printed
            return demo, opening.group(1), found.group(1)
    raise RuntimeError(f"the demo did not start in time:\n{printed}")


def log_in(page: Page, base: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill('input[name="username"]', "admin")
    page.fill('input[name="password"]', password)
    page.click("#login")
    page.wait_for_url(f"{base}/")


def measure(page: Page, url: str, runs: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"response": [], "load": []}
    for _ in range(runs):
        page.goto(url, wait_until="load")
        timing: dict[str, Any] = page.evaluate(TIMING)
        for name, value in timing.items():
            figures[name].append(value)
    return figures


def screenshots(page: Page, phone: Page, pages: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for lang in ("vi", "en"):
        for name, url in pages.items():
            joined = f"{url}{'&' if '?' in url else '?'}lang={lang}"
            page.goto(joined, wait_until="load")
            page.screenshot(path=str(folder / f"{lang}-{name}.png"), full_page=True)
            phone.goto(joined, wait_until="load")
            phone.screenshot(path=str(folder / f"{lang}-{name}-phone.png"), full_page=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="loads of each page (default 20)")
    parser.add_argument("--screenshots", type=Path, help="save every page here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kilowatch-bench-web-") as tmp:
        port = free_port()
        demo, opening, password = start_demo(Path(tmp), port)
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                log_in(page, base, password)
                alert = page.context.request.get(f"{base}/api/v1/alerts?limit=1").json()[0]["id"]
                pages = {
                    "overview": f"{base}/",
                    "site": opening,
                    "meter": f"{base}/meters/main",
                    "alerts": f"{base}/alerts",
                    "alert": f"{base}/alerts/{alert}",
                }
                print(
                    f"{'page':10} {'answer ms':>18} {'loaded ms':>18} {'first load ms':>14}  ({args.runs} loads)"
                )
                for name, url in pages.items():
                    figures = measure(page, url, args.runs)
                    cells = [f"{statistics.median(v):8.0f} / {max(v):7.0f}" for v in figures.values()]
                    print(f"{name:10} {cells[0]:>18} {cells[1]:>18} {figures['load'][0]:14.0f}")
                print("(median / slowest; the first load of a page is with nothing cached)")
                if args.screenshots:
                    phone = browser.new_context(
                        viewport={"width": 390, "height": 844},
                        device_scale_factor=2,
                        is_mobile=True,
                        storage_state=page.context.storage_state(),
                    ).new_page()
                    screenshots(page, phone, pages, args.screenshots)
                    print(f"screenshots in {args.screenshots}")
                browser.close()
        finally:
            demo.terminate()
            demo.wait(timeout=30)


if __name__ == "__main__":
    main()
