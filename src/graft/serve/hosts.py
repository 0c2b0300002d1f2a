"""The Host header check of graft's HTTP servers: a page on another site cannot reach a server
on 127.0.0.1 through DNS rebinding, because its requests carry that site's name as Host.

Starlette's ``TrustedHostMiddleware`` does this, but cuts the header at its first colon, so an
IPv6 Host such as ``[::1]:8000`` is read as ``[`` and refused, and it answers in plain text
where every other refusal of graft serve is ``{"error": "<one line>"}``. This middleware keeps
its rules (exact names, ``*`` for any, ``*.example.org`` for subdomains) with both fixed.
"""
from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send


def host_name(header: str) -> str:
    """The name in a Host header value, without its port: ``[::1]:8000`` -> ``::1``,
    ``Example.org:80`` -> ``example.org``; ``""`` for an empty or malformed value."""
    header = header.strip().lower()
    if header.startswith("["):  # an IPv6 literal keeps its colons inside the brackets
        end = header.find("]")
        return header[1:end] if end > 0 else ""
    return header.split(":", 1)[0]


class HostCheck:
    """ASGI middleware answering 400 with ``{"error": ...}`` to a request whose Host header
    names none of ``allowed`` (names or addresses, IPv6 ones with or without brackets; ``*`` allows any,
    ``*.example.org`` any subdomain of it); a websocket from such a page is closed unaccepted."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]):
        self.app = app
        # the names as bound or configured: a bare IPv6 address such as ::1 has no port to cut
        self.allowed = {name.strip().lower().strip("[]") for name in allowed}

    def permits(self, header: str) -> bool:
        if "*" in self.allowed:
            return True
        name = host_name(header)
        return bool(name) and (name in self.allowed or any(
            pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in self.allowed))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if self.permits(header):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # refused before the handshake is accepted
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": f"Host header {header!r} is not a name of this server "
                                    "(graft serve --allowed-hosts adds names)"}).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
