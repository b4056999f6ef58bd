"""Helpers for the sandbox tests: a plain-httpx client that knows the sandbox's control routes.

Each test module starts one sandbox (``running_sandbox``) and every test gets
a :class:`SandboxClient` on a freshly reset world.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx

from offpost.graph.proof import appsecret_proof
from offpost.graph.sandbox import RunningSandbox

VERSION = "v26.0"
TIMEOUT = httpx.Timeout(5.0)


class SandboxClient:
    def __init__(self, server: RunningSandbox, http: httpx.Client) -> None:
        self.server = server
        self.http = http
        self.url = server.url
        self.app_id = server.app_id
        self.app_secret = server.app_secret

    @property
    def app_token(self) -> str:
        return f"{self.app_id}|{self.app_secret}"

    # --- Graph calls --------------------------------------------------------------------

    def proof(self, token: str, *, timed: bool = False, at: int | None = None) -> dict[str, str]:
        if not timed:
            return {"appsecret_proof": appsecret_proof(self.app_secret, token)}
        signed_at = int(time.time()) if at is None else at
        return {
            "appsecret_proof": appsecret_proof(self.app_secret, token, signed_at),
            "appsecret_time": str(signed_at),
        }

    def _params(self, token: str | None, proof: bool, params: dict[str, Any]) -> dict[str, Any]:
        out = dict(params)
        if token is not None:
            out["access_token"] = token
            if proof:
                out.update(self.proof(token))
        return out

    def get(
        self, path: str, token: str | None = None, *, proof: bool = True, **params: Any
    ) -> httpx.Response:
        return self.http.get(f"/{VERSION}{path}", params=self._params(token, proof, params))

    def post(
        self, path: str, token: str | None = None, *, proof: bool = True, **params: Any
    ) -> httpx.Response:
        return self.http.post(f"/{VERSION}{path}", data=self._params(token, proof, params))

    def batch_item(
        self,
        method: str,
        path: str,
        token: str | None = None,
        *,
        proof: bool = True,
        timed: bool = False,
        **params: Any,
    ) -> dict[str, str]:
        """One element of ``batch``: its token and proof (when given) and parameters in
        its ``body`` (``relative_url``'s query for a GET)."""
        fields = dict(params)
        if token is not None:
            fields["access_token"] = token
            if proof:
                fields.update(self.proof(token, timed=timed))
        encoded = urlencode(fields)
        if method == "GET":
            return {"method": method, "relative_url": f"{path.lstrip('/')}?{encoded}"}
        return {"method": method, "relative_url": path.lstrip("/"), "body": encoded}

    def batch(
        self,
        items: list[Any],
        token: str | None,
        *,
        proof: bool = True,
        versioned: bool = True,
        **params: Any,
    ) -> httpx.Response:
        """``POST /`` (``/v26.0/`` when ``versioned``) with ``batch`` and the top-level token."""
        path = f"/{VERSION}/" if versioned else "/"
        data = {"batch": json.dumps(items), **self._params(token, proof, params)}
        return self.http.post(path, data=data)

    # --- control routes -----------------------------------------------------------------

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.http.request(method, f"/_sandbox{path}", json=body)
        assert response.is_success, response.text
        return response.json()

    def mint_user(
        self,
        pages: int = 1,
        *,
        scopes: list[str] | None = None,
        page_tasks: list[str] | None = None,
        **body: Any,
    ) -> dict[str, Any]:
        """A user with ``pages`` new Pages; ``page_tasks`` are their tasks on each one."""
        if scopes is not None:
            body["scopes"] = scopes
        if page_tasks is not None:
            body["page_tasks"] = page_tasks
        return self.control("POST", "/users", {"pages": pages, **body})

    def set_tasks(self, user_id: str, page_id: str, tasks: list[str]) -> dict[str, Any]:
        return self.control("PUT", f"/users/{user_id}/pages/{page_id}/tasks", {"tasks": tasks})

    def remove_role(self, user_id: str, page_id: str) -> dict[str, Any]:
        """Someone took the user's role on the Page away."""
        return self.control("DELETE", f"/users/{user_id}/pages/{page_id}")

    def restore_role(
        self, user_id: str, page_id: str, tasks: list[str] | None = None
    ) -> dict[str, Any]:
        """The user has a role on the Page (again), with ``tasks`` (default full control)."""
        body = {"tasks": tasks} if tasks is not None else None
        return self.control("PUT", f"/users/{user_id}/pages/{page_id}", body)

    def settings(self, **changes: Any) -> dict[str, Any]:
        return self.control("POST", "/settings", changes)

    def advance(self, seconds: float) -> int:
        return int(self.control("POST", "/clock", {"advance_seconds": seconds})["now"])

    def fault(self, **body: Any) -> dict[str, Any]:
        return self.control("POST", "/faults", body)

    def posts(self, page_id: str) -> list[dict[str, Any]]:
        return self.control("GET", f"/pages/{page_id}/posts")["data"]

    def usage(self) -> dict[str, Any]:
        """``GET /_sandbox/usage``: calls, budget, pct, throttled_total per app and Page."""
        return self.control("GET", "/usage")

    def calls(self) -> list[dict[str, Any]]:
        return self.control("GET", "/calls")["data"]

    # --- common flows -------------------------------------------------------------------

    def exchange(self, token: str) -> httpx.Response:
        return self.get(
            "/oauth/access_token",
            grant_type="fb_exchange_token",
            client_id=self.app_id,
            client_secret=self.app_secret,
            fb_exchange_token=token,
        )

    def long_lived(self, token: str) -> str:
        response = self.exchange(token)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def page_token(self, user_token: str, page_id: str) -> str:
        response = self.get(f"/{page_id}", user_token, fields="access_token")
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def publisher(self, *, long_lived: bool = True) -> tuple[str, str, dict[str, Any]]:
        """(page id, its Page token, the minted user) for a fresh one-Page user."""
        user = self.mint_user(pages=1)
        token = self.long_lived(user["access_token"]) if long_lived else user["access_token"]
        page_id = user["pages"][0]["id"]
        return page_id, self.page_token(token, page_id), user

    def accounts(self, user_token: str) -> list[dict[str, Any]]:
        """The user's ``/me/accounts`` entries (one result page), with Page tokens and tasks."""
        response = self.get("/me/accounts", user_token, fields="id,name,access_token,tasks")
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def debug(self, input_token: str) -> httpx.Response:
        return self.get("/debug_token", self.app_token, proof=False, input_token=input_token)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of a Graph error reply (asserting it is one)."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert "error" in body, body
    error: dict[str, Any] = body["error"]
    assert error["fbtrace_id"]
    return error


@contextlib.contextmanager
def shared_sandbox_client(server: RunningSandbox) -> Iterator[SandboxClient]:
    """A client on a world that running processes use too: nothing is reset (each test
    mints its own users); the faults set through it are removed afterwards."""
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        client = SandboxClient(server, http)
        yield client
        client.control("DELETE", "/faults")


@contextlib.contextmanager
def sandbox_client(server: RunningSandbox) -> Iterator[SandboxClient]:
    """A client on a reset world."""
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        client = SandboxClient(server, http)
        client.control("POST", "/reset")
        yield client
