"""``python -m agent --config agent.yaml``: the agent's runtime, started without the `kilowatch` command.

`kilowatch agent run` execs this (the same process id, so systemd's watchdog and signals still reach
it): typer, click and the command's modules would otherwise stay in the running agent's memory, 1.7-1.9 MB
of a gateway's 40 MB budget (bench/agent_bus.py, 32 and 200 meters). The config file is validated by the
same pydantic models, and its problems reported the same way, as by every other command.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from agent.config import AgentConfig
from agent.runner import one_malloc_arena, run
from kilowatch import yamlconfig
from kilowatch.cli_support import EXIT_CONFIG, LogLevel, config_problems, setup_logging


def main(argv: Sequence[str] | None = None) -> None:
    """Validate the config file (exit 2 with its problems), then poll and publish until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m agent",
        description="Poll the configured meters and publish their readings until SIGTERM or Ctrl-C.",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="agent configuration file (YAML)")
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=[level.value for level in LogLevel],
        default="INFO",
        help="logging threshold",
    )
    args = parser.parse_args(argv)
    one_malloc_arena()
    try:
        config = yamlconfig.load(AgentConfig, args.config).relative_to(args.config.parent)
    except yamlconfig.ConfigError as exc:
        parser.exit(EXIT_CONFIG, config_problems(args.config, exc) + "\n")
    setup_logging(LogLevel(args.log_level))
    asyncio.run(run(config))


if __name__ == "__main__":
    main()
