"""Who may read the operator endpoints, ``/metrics`` and ``/readyz``.

They describe the whole deployment (every organization's deliveries, the store's and Kafka's
errors), so no tenant may read them. Two ways, chosen by ``[api] operator_address``:

* unset (the default): on the API's address, with the admin token, like the admin routes;
* set: only on that address, without a token (the address is the protection: loopback, or a
  network only the monitoring reaches), and that address serves nothing else. The API's own
  address then answers 404 for them.

One app serves both addresses (one store, one lifespan); a request tells which it came in on by
the local port in its ASGI scope, which :func:`control.api.serve.serve` records as
``app.state.operator_port``.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from control.api.auth import bearer, require_admin
from control.api.problems import problem

OPERATOR_PATHS = frozenset({"/metrics", "/readyz"})
OPERATOR_ADDRESS_PATHS = OPERATOR_PATHS | {"/healthz"}


def _on_operator_port(scope: Scope, operator_port: int | None) -> bool:
    server = scope.get("server")
    return operator_port is not None and server is not None and server[1] == operator_port


class OperatorSplit:
    """With an operator address: its port serves only the operator paths, the API's port never them."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http" and not _served_here(scope):
            await problem(404, "Not Found")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _served_here(scope: Scope) -> bool:
    # Starlette puts the app in the scope before its middleware runs.
    if _on_operator_port(scope, getattr(scope["app"].state, "operator_port", None)):
        return scope["path"] in OPERATOR_ADDRESS_PATHS
    return scope["path"] not in OPERATOR_PATHS


async def operator_access(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
                          ) -> None:
    """Pass on the operator address (:class:`OperatorSplit` filtered the request), else need the admin token."""
    if request.app.state.settings.api.operator_address is None:
        await require_admin(request, credentials)
