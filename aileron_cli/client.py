"""HTTP client for the control plane API: every failure becomes one readable CliError."""

from __future__ import annotations

from typing import Any

import httpx

from aileron_site import __version__


class CliError(Exception):
    """A failure to report as one line and a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ApiClient:
    def __init__(self, server: str, token: str | None = None, timeout: float = 15.0) -> None:
        self.server = server.rstrip("/")
        headers = {"User-Agent": f"aileron-cli/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout, follow_redirects=False)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise CliError(
                f"cannot reach the Aileron service at {self.server} (is `aileron service` running?)"
            ) from None
        except httpx.TimeoutException:
            raise CliError(f"the Aileron service at {self.server} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise CliError(f"talking to {self.server} failed: {exc}") from None
        if response.status_code >= 400:
            raise CliError(_problem_message(response))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{self.server} answered {method} {path} with something that is not JSON") from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body)

    def put(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("PUT", path, json=body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _problem_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("detail"):
        return f"{body['detail']} ({response.status_code})"
    return f"the server answered {response.status_code} {response.reason_phrase}"
