"""Every `kilowatch ...` command the deployment guides and the units run exists and parses: its sub-commands,
options and arguments are those the CLI has (click parses each line as the shell would pass it, without running
it). A renamed option then fails here, not on an administrator's host."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import typer.main
from typer._click.core import Command  # typer 0.29 vendors click: its parser is what runs
from typer._click.exceptions import ClickException
from typer.core import TyperGroup

from app.cli import app
from tests.paths import REPO

ROOT = REPO
DOCS = (ROOT / "deploy" / "README.md", ROOT / "README.md")
UNITS = sorted((ROOT / "deploy" / "systemd").glob("kilowatch-*.service"))
PREFIXES = (["sudo"], ["sudo", "-u", "kilowatch"])


def shell_lines(markdown: Path) -> list[str]:
    """The lines of the ```sh blocks, and the inline `sudo ... kilowatch ...` commands of the prose (the
    commands table of the top README shows the syntax, with placeholders, not command lines)."""
    text = markdown.read_text()
    blocks = re.findall(r"^\s*```sh\n(.*?)^\s*```", text, flags=re.MULTILINE | re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    return lines + re.findall(r"`(sudo (?:-u kilowatch )?kilowatch [^`]+)`", text)


def kilowatch_commands(line: str) -> list[list[str]]:
    """The arguments of each `kilowatch` command in one shell line (commands joined by &&, |, ;)."""
    found = []
    for segment in re.split(r"&&|\|\||[|;]", line):
        words = shlex.split(segment, comments=True)
        for prefix in ([], *PREFIXES):
            if words[: len(prefix) + 1] == [*prefix, "kilowatch"]:
                found.append(words[len(prefix) + 1 :])
                break
    return found


def documented() -> list[tuple[str, list[str]]]:
    commands = [
        (f"{doc.relative_to(ROOT)}: {line}", args)
        for doc in DOCS
        for line in shell_lines(doc)
        for args in kilowatch_commands(line)
    ]
    for unit in UNITS:
        for exec_start in re.findall(r"^ExecStart=\S+/kilowatch (.+)$", unit.read_text(), flags=re.MULTILINE):
            commands.append((f"{unit.name}: {exec_start}", shlex.split(exec_start)))
    return commands


COMMANDS = documented()


def test_the_guides_have_commands_to_check() -> None:
    names = {" ".join(args[:2]) for _, args in COMMANDS}
    assert {
        "collector broker-setup",
        "collector provision-gateway",
        "collector backup",
        "collector restore",
    } <= names
    assert {"collector run", "agent run"} <= names  # from the units


def parse_error(args: list[str]) -> str | None:
    """Why click would refuse `kilowatch ARGS`; None when it parses."""
    command: Command = typer.main.get_command(app)
    path = ["kilowatch"]
    while isinstance(command, TyperGroup):
        if not args:
            return f"`{' '.join(path)}` needs a sub-command"
        name, *args = args
        sub = command.get_command(typer.Context(command), name)
        if sub is None:
            return f"`{' '.join(path)}` has no sub-command {name!r}"
        command, path = sub, [*path, name]
    try:
        command.make_context(" ".join(path), list(args))
    except ClickException as exc:
        return exc.format_message()
    return None


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_command_parses(where: str, args: list[str]) -> None:
    assert parse_error(args) is None, where


def test_a_wrong_command_is_caught() -> None:
    assert "No such option: --outt" in (parse_error(["collector", "backup", "--outt", "x"]) or "")
    assert "Missing argument 'backup_file'" in (parse_error(["collector", "restore"]) or "")
    assert "no sub-command 'backups'" in (parse_error(["collector", "backups"]) or "")
