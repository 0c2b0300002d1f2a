"""``graft serve``'s settings (torch- and fastapi-free: the command line reads them at start)."""
from __future__ import annotations

from dataclasses import dataclass

from graft.config import Config, setting


@dataclass
class ServeSettings(Config):
    """How the server listens, batches and what it accepts: ``max_batch`` images or
    ``max_wait_ms`` after the first waiting request, whichever comes first, make a batch;
    ``max_body_bytes`` caps a request body (413 beyond it); ``max_images`` the images in one
    request. What one request may cost is bounded before anything is decoded: ``max_pixels``
    per image and ``max_request_pixels`` per request, both counted from the images' headers
    (a one-pass JPEG counts the pixels of its draft decode at the model's size, since that is
    what is decoded). What a slow client may hold is bounded too: ``max_connections`` open
    connections, and ``read_timeout_s`` seconds to send a request's headers and its body.
    ``allowed_hosts`` adds Host header names to the bound host, ``localhost`` and ``127.0.0.1``.
    The defaults are ``graft serve``'s (its options are generated from these fields)."""

    host: str = setting("127.0.0.1", "Address to listen on; 0.0.0.0 exposes the models to the network.")
    port: int = setting(8000, "Port to listen on.", low=1, high=65535)
    max_batch: int = setting(32, "Images per ONNX Runtime batch, gathered from concurrent requests.", low=1)
    max_wait_ms: float = setting(5.0, "How long the first waiting request waits for others to join its batch "
                                 "(at most a second: every request in the batch waits as long).", low=0, high=1000)
    max_body_bytes: int = setting(20 * 1024 * 1024, "Largest request body accepted (413 beyond it).", low=1)
    max_pixels: int = setting(16_000_000, "Most pixels one image may cost to decode, read from its header before "
                                          "decoding (a one-pass JPEG counts its draft decode at the model's size); "
                                          "a larger image is that file's error.", low=1)
    max_request_pixels: int = setting(64_000_000, "Most pixels one request may cost to decode, summed over its "
                                                  "images (413 beyond it, before any is decoded).", low=1)
    allowed_hosts: str = setting("", "Host header names accepted besides the bound host, localhost and 127.0.0.1, "
                                     "comma-separated ('*': any); other Host headers get 400.")
    max_connections: int = setting(64, "Most open connections (idle ones included); a request beyond them gets "
                                       "503 (uvicorn's limit_concurrency).", low=1)
    read_timeout_s: float = setting(30.0, "Seconds a client has to send a request's headers, then again its body; "
                                          "a connection still sending headers is closed, a body still arriving "
                                          "gets 408.", low=0, open="low")
    max_images: int = setting(64, "Most images in one request.", low=1)
    default_top_k: int = setting(5, "Classes answered per image when the request gives no top_k.", low=1)
    decode_threads: int = setting(0, "Threads decoding uploads (0: one per CPU core).", low=0)

    def validate(self) -> None:
        super().validate()
        if self.max_request_pixels < self.max_pixels:
            from graft.errors import GraftError

            raise GraftError(f"--max-request-pixels ({self.max_request_pixels}) must be at least --max-pixels "
                             f"({self.max_pixels}): one image at the limit must fit a request")

    def host_names(self) -> list[str]:
        """The Host header names the server answers (TrustedHostMiddleware's list)."""
        extra = [name.strip() for name in self.allowed_hosts.split(",") if name.strip()]
        names = [self.host, "localhost", "127.0.0.1", *extra]
        if self.host in ("0.0.0.0", "::", ""):  # every interface: the machine's own names and addresses too
            import socket

            names += [socket.gethostname(), socket.getfqdn()]
            try:
                names += socket.gethostbyname_ex(socket.gethostname())[2]
            except OSError:  # a name without an address: the names above still work
                pass
        return list(dict.fromkeys(names))
