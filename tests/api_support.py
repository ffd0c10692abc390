"""The collector's API in tests: the real app with its lifespan run, called through httpx's ASGI transport;
what the API and the service leave open."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


@asynccontextmanager
async def api_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` while its lifespan runs (httpx's transport alone does not run it)."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://collector"
        ) as client,
    ):
        yield client


def open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors are open on `path`."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(fd) == str(path)
        except FileNotFoundError:  # the descriptor listing the directory itself, closed by now
            continue
    return count
