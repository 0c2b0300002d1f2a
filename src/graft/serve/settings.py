"""``graft serve``'s settings (torch- and fastapi-free: the command line reads them at start)."""
from __future__ import annotations

from dataclasses import dataclass

from graft.config import Config, setting


@dataclass
class ServeSettings(Config):
    """How the server listens, batches and what it accepts: ``max_batch`` images or
    ``max_wait_ms`` after the first waiting request, whichever comes first, make a batch;
    ``max_body_bytes`` caps a request body (413 beyond it); ``max_images`` the images in one
    request. The defaults are ``graft serve``'s (its options are generated from these fields)."""

    host: str = setting("127.0.0.1", "Address to listen on; 0.0.0.0 exposes the models to the network.")
    port: int = setting(8000, "Port to listen on.", low=1, high=65535)
    max_batch: int = setting(32, "Images per ONNX Runtime batch, gathered from concurrent requests.", low=1)
    max_wait_ms: float = setting(5.0, "How long the first waiting request waits for others to join its batch.",
                                 low=0)
    max_body_bytes: int = setting(20 * 1024 * 1024, "Largest request body accepted (413 beyond it).", low=1)
    max_images: int = setting(64, "Most images in one request.", low=1)
    default_top_k: int = setting(5, "Classes answered per image when the request gives no top_k.", low=1)
    decode_threads: int = setting(0, "Threads decoding uploads (0: one per CPU core).", low=0)
