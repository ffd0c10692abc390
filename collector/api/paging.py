"""Pages of a list: `limit` (at most :data:`MAX_LIMIT`) and an opaque `cursor`; when more follow, the answer
carries ``Link: <...>; rel="next"`` (RFC 8288), the same request with the next cursor. Bodies stay plain
JSON arrays.

The lists this serves are small and slowly changing (meters, gateways and what they reported), so the cursor
is an offset; the alerts, which grow without bound, page by id instead (`before`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Response

T = TypeVar("T")

MAX_LIMIT = 1000
"""The most items one page holds."""
DEFAULT_LIMIT = 100

LINK_HEADER: dict[str, Any] = {
    "Link": {
        "description": 'When more items follow: `<URL of the next page>; rel="next"` (RFC 8288)',
        "schema": {"type": "string"},
    }
}
"""For a paged route's 200 response in the OpenAPI document."""


def link_next(request: Request, response: Response, **params: str | int) -> None:
    """Point `response` at the next page: this request with `params` replaced (a relative URL)."""
    url = request.url.include_query_params(**params)
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int
    request: Request
    response: Response

    def take(
        self, fetch: Callable[[int], Sequence[T]], keep: Callable[[T], bool] = lambda _: True
    ) -> list[T]:
        """This page of the items `fetch(n)` returns (its first `n`, or all of them) that `keep` admits;
        sets the Link header when more follow. `fetch` is asked again for more while too few are kept."""
        wanted = self.offset + self.limit + 1
        asked = wanted
        while True:
            rows = fetch(asked)
            kept = [row for row in rows if keep(row)]
            if len(kept) >= wanted or len(rows) < asked:
                break
            asked *= 4
        if len(kept) > self.offset + self.limit:
            link_next(self.request, self.response, cursor=self.offset + self.limit)
        return kept[self.offset : self.offset + self.limit]


def _page(
    request: Request,
    response: Response,
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"At most this many (at most {MAX_LIMIT})")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{1,9}$",
            description='Where the previous page ended: take it from that page\'s `Link: <...>; rel="next"`',
        ),
    ] = None,
) -> Page:
    return Page(limit=limit, offset=int(cursor or 0), request=request, response=response)


Paged = Annotated[Page, Depends(_page)]
