"""``python -m agent --config agent.yaml``: the agent's runtime, started without the `kilowatch` command.

`kilowatch agent run` execs this (the same process id, so systemd's watchdog and signals still reach
it): typer, click and the command's modules would otherwise stay in the running agent's memory, 1.7-1.9 MB
of a gateway's 40 MB budget (bench/agent_bus.py, 32 and 200 meters). The config file is validated by the
same pydantic models, and its problems reported the same way, as by every other command.
"""

from __future__ import annotations

import asyncio
import getopt
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.config import AgentConfig
from agent.runner import one_malloc_arena, run
from kilowatch import yamlconfig
from kilowatch.cli_support import EXIT_CONFIG, LogLevel, config_problems, setup_logging

USAGE = f"usage: python -m agent --config FILE [--log-level {'|'.join(LogLevel)}]"
HELP = f"""{USAGE}

Poll the configured meters and publish their readings until SIGTERM or Ctrl-C.

  -c, --config FILE    agent configuration file (YAML)
  --log-level LEVEL    logging threshold (default INFO)"""


def options(argv: Sequence[str]) -> tuple[Path, LogLevel]:
    """The config file and the log level; SystemExit (2, with the usage) for anything else.

    getopt, not argparse: argparse and the gettext it imports would be 0.33 MB of the running agent.
    """
    try:
        given, rest = getopt.gnu_getopt(list(argv), "hc:", ["help", "config=", "log-level="])
        found = dict(given)
        if "-h" in found or "--help" in found:
            print(HELP)
            raise SystemExit(0)
        if rest:
            raise getopt.GetoptError(f"unexpected argument {rest[0]!r}")
        config = found.get("--config", found.get("-c"))
        if config is None:
            raise getopt.GetoptError("--config FILE is required")
        level = found.get("--log-level", LogLevel.INFO.value).upper()
        if level not in set(LogLevel):
            raise getopt.GetoptError(f"--log-level {level!r} is not one of {', '.join(LogLevel)}")
    except getopt.GetoptError as exc:
        print(f"{USAGE}\npython -m agent: {exc}", file=sys.stderr)
        raise SystemExit(2) from None  # a usage error's code, as argparse and click exit
    return Path(config), LogLevel(level)


def main(argv: Sequence[str] | None = None) -> None:
    """Validate the config file (exit 2 with its problems), then poll and publish until SIGTERM or Ctrl-C."""
    path, level = options(sys.argv[1:] if argv is None else argv)
    one_malloc_arena()
    try:
        config = yamlconfig.load(AgentConfig, path).relative_to(path.parent)
    except yamlconfig.ConfigError as exc:
        print(config_problems(path, exc), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None
    setup_logging(level)
    asyncio.run(run(config))


if __name__ == "__main__":
    main()
