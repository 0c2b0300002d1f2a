"""How ``graft serve``'s uvicorn treats connections: what a slow or unfinished client may hold.

uvicorn's own settings do most of it: ``limit_concurrency`` (``max_connections``: beyond it a
request gets 503), ``timeout_keep_alive`` (an idle kept-alive connection is closed after
``KEEP_ALIVE_S``) and h11's ``max_incomplete_event_size`` (request headers over
``MAX_HEADER_BYTES`` are refused). The request body's time limit is the app's
(:class:`graft.serve.app.BodyLimit`: 408). One thing uvicorn has no setting for: a connection
that sends part of its headers and stalls is kept open for ever (a "slowloris" client holds one
of ``max_connections`` for nothing); :class:`HeaderTimeoutH11Protocol` closes it after
``read_timeout_s``.
"""
from __future__ import annotations

import functools

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

KEEP_ALIVE_S = 5  # uvicorn's default, written here so that it is one of graft's rules
MAX_HEADER_BYTES = 16 * 1024  # h11's default, written here for the same reason


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers have not all arrived
    ``header_timeout`` seconds after it opened or after its previous response."""

    def __init__(self, *args, header_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.header_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _headers_late(self) -> None:
        # IDLE: no complete request yet in this cycle (a request whose headers arrived is the
        # body timeout's and the app's; this one has not reached the app).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def server_config(app, settings) -> uvicorn.Config:
    """The uvicorn configuration serving ``app`` by ``settings`` (a
    :class:`~graft.serve.settings.ServeSettings`): host, port, ``max_connections`` as
    ``limit_concurrency``, the keep-alive and header limits above, and ``read_timeout_s`` for
    request headers; no access log."""
    protocol = functools.partial(HeaderTimeoutH11Protocol, header_timeout=settings.read_timeout_s)
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                          http=protocol, limit_concurrency=settings.max_connections,
                          timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES)
