"""The Prefect server of both stacks: `python -m services.prefect --host HOST --port PORT`.

What `prefect server start` runs in the foreground (Prefect's app with its background services,
on uvicorn, with Prefect's own keep-alive and websocket settings), with one addition: basic auth
answered first (services/prefect/auth.py), so that every API route but the health probes
answers 401 without credentials, writes included. It refuses to start without
PREFECT_SERVER_API_AUTH_STRING: this stack has no unauthenticated Prefect server.
"""

from __future__ import annotations

import argparse
import logging
import sys

logger = logging.getLogger("services.prefect")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.prefect", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args(argv)

    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import get_current_settings

    from services.prefect.auth import RequireBasicAuth

    settings = get_current_settings()
    secret = settings.server.api.auth_string
    auth_string = secret.get_secret_value() if secret else ""
    if not auth_string:
        print(  # noqa: T201 - the command's own output
            "refusing to start: PREFECT_SERVER_API_AUTH_STRING is not set (user:password)",
            file=sys.stderr,
        )
        return 2
    app = create_app(final=True)
    app.add_middleware(RequireBasicAuth, auth_string=auth_string)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        timeout_keep_alive=settings.server.api.keepalive_timeout,
        ws_ping_interval=settings.server.api.websocket_ping_interval,
        ws_ping_timeout=settings.server.api.websocket_ping_timeout,
        log_level=settings.server.logging_level.lower(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
