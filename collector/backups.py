"""Nightly ledger backups kept as a rotation: `kilowatch collector backup --dir DIR --keep N`.

Each run writes ``kilowatch-<UTC time>.db`` into the folder and deletes the oldest such files beyond the
newest `keep`; other files in the folder are never touched. The copy itself is
:func:`collector.store.backup.backup`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from collector.store.backup import backup

NAME = re.compile(r"kilowatch-\d{8}T\d{6}Z\.db")
"""The rotation's files; their names sort in time order."""


def rotate(
    ledger: Path, folder: Path, *, keep: int | None, now: datetime | None = None
) -> tuple[Path, list[Path]]:
    """Back `ledger` up into `folder`; the new file, and the old ones deleted to keep `keep` copies (None:
    all)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    out = folder / f"kilowatch-{stamp}.db"
    backup(ledger, out)
    copies = sorted(p for p in folder.iterdir() if NAME.fullmatch(p.name))
    expired = copies[: max(len(copies) - keep, 0)] if keep is not None else []
    for path in expired:
        path.unlink()
    return out, expired
