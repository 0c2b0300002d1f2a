"""Running ``graft app``: check the root, make a token, bind, print the URL, serve until Ctrl-C."""
from __future__ import annotations

import importlib.util
import secrets
from pathlib import Path

from graft.errors import GraftError


def app_url(host: str, port: int, token: str) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/?token={token}"


def run_app(root=".", host: str = "127.0.0.1", port: int = 8000, echo=print, token: str | None = None) -> None:
    """Serve the app for the projects under ``root`` on ``host:port`` until interrupted.
    GraftError in one line for a missing ``serve`` extra, a root that is not a folder, a taken port."""
    missing = [package for module, package in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"),
                                               ("python_multipart", "python-multipart"))
               if importlib.util.find_spec(module) is None]
    if missing:
        raise GraftError(f"graft app needs {', '.join(missing)}: pip install 'graft-vision[serve]'")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise GraftError(f"--root {root} is not a folder")
    import uvicorn

    from graft.app.server import create_app
    from graft.serve.runner import listening_socket

    token = token or secrets.token_urlsafe(24)
    sock = listening_socket(host, port)
    try:
        app = create_app(folder, token, hosts=tuple(dict.fromkeys((host, "127.0.0.1", "localhost"))))
        echo(f"graft app: projects under {folder.resolve()}")
        echo(f"  open {app_url(host, port, token)}  (Ctrl-C stops)")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
    finally:
        sock.close()
    echo("graft app: stopped")
