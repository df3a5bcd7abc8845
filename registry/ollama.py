"""A small client for Ollama's REST API: the calls a deployment makes, with Ollama's errors made plain.

Ollama reports failures three ways, and each becomes an ``OllamaError`` with one readable line:
an HTTP error status with ``{"error": "..."}``; for streamed calls (``/api/create``), a 200 whose NDJSON
stream ends in an ``{"error": "..."}`` line; and no answer at all (not running, timeout).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from schemas.errors import ChatlakeError, NotFound

CONNECT_TIMEOUT_S = 5.0


class OllamaError(ChatlakeError, RuntimeError):
    """Ollama refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class OllamaUnavailable(OllamaError):
    """Nothing answered (not running, wrong host) or it answered too late."""


class OllamaNotFound(OllamaError, NotFound):
    """The model or blob does not exist (HTTP 404)."""


def sha256_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, the name Ollama stores a blob under."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


class OllamaClient:
    def __init__(self, host: str = "http://127.0.0.1:11434", *, timeout: float = 600.0):
        self.host = host.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    # -- plumbing -------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.host + path,
                                            timeout=(CONNECT_TIMEOUT_S, self.timeout), **kwargs)
        except requests.Timeout:
            raise OllamaUnavailable(f"Ollama at {self.host} did not answer {method} {path} within "
                                    f"{self.timeout:g} s") from None
        except requests.ConnectionError:
            raise OllamaUnavailable(f"cannot reach Ollama at {self.host} (is `ollama serve` running?)") from None
        if response.status_code >= 400:
            message = _error_text(response)
            cls = OllamaNotFound if response.status_code == 404 else OllamaError
            raise cls(f"Ollama {method} {path}: {message} (HTTP {response.status_code})",
                      status=response.status_code)
        return response

    # -- models ---------------------------------------------------------------------------------------
    def version(self) -> str:
        return self._request("GET", "/api/version").json().get("version", "")

    def tags(self) -> list[str]:
        return [m["name"] for m in self._request("GET", "/api/tags").json().get("models", [])]

    def show(self, model: str) -> dict:
        return self._request("POST", "/api/show", json={"model": model}).json()

    def exists(self, model: str) -> bool:
        try:
            self.show(model)
            return True
        except OllamaNotFound:
            return False

    def copy(self, source: str, destination: str) -> None:
        self._request("POST", "/api/copy", json={"source": source, "destination": destination})

    def delete(self, model: str) -> None:
        self._request("DELETE", "/api/delete", json={"model": model})

    # -- blobs ----------------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        try:
            self._request("HEAD", f"/api/blobs/{digest}")
            return True
        except OllamaNotFound:
            return False

    def push_blob(self, path: Path) -> str:
        """Upload a file as a blob unless Ollama has it already; returns its digest."""
        digest = sha256_digest(path)
        if not self.has_blob(digest):
            with open(path, "rb") as f:
                self._request("POST", f"/api/blobs/{digest}", data=f)
        return digest

    # -- create ---------------------------------------------------------------------------------------
    def create(self, model: str, *, base: str, adapters: dict[str, str], template: str | None = None,
               parameters: dict[str, Any] | None = None, system: str | None = None,
               on_status: Callable[[str], None] | None = None) -> list[str]:
        """Create ``model`` from ``base`` plus GGUF adapters (file name -> blob digest); returns the status
        lines. Streams, so a long create never looks like a hung request."""
        body: dict[str, Any] = {"model": model, "from": base, "adapters": adapters, "stream": True}
        if template is not None:
            body["template"] = template
        if parameters:
            body["parameters"] = parameters
        if system:
            body["system"] = system
        response = self._request("POST", "/api/create", json=body, stream=True)
        statuses = []
        try:
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except ValueError:
                    raise OllamaError(f"Ollama /api/create sent a line that is not JSON: {line[:200]!r}") from None
                if "error" in item:
                    raise OllamaError(f"Ollama could not create {model}: {item['error']}")
                status = str(item.get("status", ""))
                statuses.append(status)
                if on_status:
                    on_status(status)
        except requests.RequestException as exc:
            raise OllamaUnavailable(f"Ollama's /api/create stream broke off: {exc.__class__.__name__}") from None
        if not statuses or statuses[-1] != "success":
            raise OllamaError(f"Ollama's /api/create stream ended without success (last: "
                              f"{statuses[-1] if statuses else 'nothing'!r})")
        return statuses

    # -- inference ------------------------------------------------------------------------------------
    def chat(self, model: str, messages: list[dict], *, options: dict | None = None) -> dict:
        """One non-streamed /api/chat reply: ``message``, ``done_reason``, ``eval_count``..."""
        body = {"model": model, "messages": messages, "stream": False, "options": options or {}}
        return self._request("POST", "/api/chat", json=body).json()


def _error_text(response: requests.Response) -> str:
    try:
        data = response.json()
        if isinstance(data, dict) and "error" in data:
            return str(data["error"])
    except ValueError:
        pass
    return (response.text or response.reason or "").strip()[:300]
