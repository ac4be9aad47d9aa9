"""A plain HTTP client for the REST tests: urllib.request, run in a worker thread.

urllib is deliberately unlike aiohttp (which discord.py uses), so the REST tests check
the wire, not one client library's tolerance.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from functools import partial
from typing import Any

import attrs
import trio

_TIMEOUT = 10.0


@attrs.frozen(kw_only=True)
class HttpReply:
    status: int
    content_type: str | None
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _request_sync(
    url: str,
    method: str,
    token: str | None,
    body: bytes | None,
    headers: dict[str, str],
) -> HttpReply:
    request = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", token)
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            return HttpReply(
                status=response.status,
                content_type=response.headers.get("Content-Type"),
                body=response.read(),
            )
    except urllib.error.HTTPError as error:
        with error:
            return HttpReply(
                status=error.code,
                content_type=error.headers.get("Content-Type"),
                body=error.read(),
            )


async def http(
    url: str,
    method: str = "GET",
    *,
    token: str | None = None,
    body: bytes | None = None,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
) -> HttpReply:
    """One request; ``token`` is the whole Authorization header value."""
    sent = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        sent.setdefault("Content-Type", "application/json")
    return await trio.to_thread.run_sync(
        partial(_request_sync, url, method, token, body, sent)
    )
