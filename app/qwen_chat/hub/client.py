"""A thin layer over huggingface_hub: file listings at a pinned commit, URLs, auth headers, the HTTP client for
downloads and the token.

Every hub failure becomes a `HubError` whose message says what to do. `HF_ENDPOINT` and `HF_HUB_OFFLINE` are read
when called (huggingface_hub reads them once, at import).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from huggingface_hub import HfApi, constants, hf_hub_url
from huggingface_hub import get_token as _hf_stored_token
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import build_hf_headers

from qwen_chat.system.http import http_library

KEYRING_SERVICE = "qwen-chat"
KEYRING_USER = "huggingface"
WEBSITE = "https://huggingface.co"
OFFLINE_MESSAGE = "offline: only models already on disk can be used (HF_HUB_OFFLINE is set)"
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0


class HubError(Exception):
    """The hub could not give us what we asked for; the message says why and what to do."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the repo root, `/`-separated
    size: int
    sha256: str | None = None  # the LFS sha256; None for files not stored with LFS


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"} or constants.is_offline_mode()


def safe_path(path: str) -> str:
    """A hub file name that can be joined onto the models folder without escaping it."""
    pure = PurePosixPath(path)
    if (not path or "\\" in path or pure.is_absolute() or re.match(r"[A-Za-z]:", path)
            or any(part in ("..", ".") for part in path.split("/")) or "\x00" in path):
        raise HubError(f"refusing the hub file name {path!r}: it would be written outside the models folder")
    return path


# --- listing -----------------------------------------------------------------------------------------------------


def list_files(repo: str, revision: str = "main", token: str | None = None) -> tuple[str, list[RemoteFile]]:
    """The commit `revision` points at and every file there with its size and LFS sha256."""
    if offline():
        raise HubError(OFFLINE_MESSAGE)
    api = HfApi(endpoint=endpoint(), token=token or False)
    try:
        info = api.model_info(repo, revision=revision, files_metadata=True, timeout=60)
    except Exception as exc:  # every failure is translated below
        raise map_error(exc, repo, revision=revision, token=token) from exc
    if not info.sha:
        raise HubError(f"the hub did not say which commit {repo}@{revision} is; try again")
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        if size is None:
            raise HubError(f"the hub listing of {repo} has no size for {sibling.rfilename}; try again")
        files.append(RemoteFile(sibling.rfilename, int(size), lfs.sha256 if lfs is not None else None))
    return info.sha, files


def resolve_url(repo: str, path: str, commit: str) -> str:
    return hf_hub_url(repo, safe_path(path), revision=commit, endpoint=endpoint())


def auth_headers(token: str | None) -> dict[str, str]:
    """User-Agent plus the Authorization header when there is a token (never the implicit stored one)."""
    return build_hf_headers(token=token or False, library_name="qwen-chat")


# --- the HTTP client for file downloads --------------------------------------------------------------------------


def session() -> Any:
    from huggingface_hub.utils import get_session

    return get_session()  # an httpx2.Client in huggingface_hub 2.x (honours HF_HUB_OFFLINE, follows redirects)


def transport_errors() -> tuple[type[BaseException], ...]:
    return (http_library().TransportError, ConnectionError, TimeoutError)


def download_timeout() -> Any:
    return http_library().Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)


# --- errors ------------------------------------------------------------------------------------------------------


def gated_message(repo: str) -> str:
    return (f"{repo} is gated or private: accept its license at {WEBSITE}/{repo} and log in with "
            "`qwen-chat login` or set HF_TOKEN")


def needs_token_message(repo: str) -> str:
    """A 401 when no token was sent: the repository wants one."""
    return (f"this repository ({repo}) needs a Hugging Face token and none is set: it is gated or private; accept "
            f"its license at {WEBSITE}/{repo} and log in with `qwen-chat login` or set HF_TOKEN")


def token_refused_message(repo: str, token: str | None) -> str:
    """A 401 when a token was sent: the hub did not accept the token itself (a gated repo it cannot open is 403)."""
    return (f"your Hugging Face token was refused (401): it may be mistyped, expired or lack access to {repo}; "
            f"{_replace_token_hint(token)}")


def no_access_message(repo: str) -> str:
    """A 403 with a token: the hub knows the token, but its account has not been given access."""
    return (f"{repo} is gated or private and your Hugging Face token has no access to it (403): accept its license "
            f"at {WEBSITE}/{repo} with the account the token belongs to, or log in with a token that has access "
            "(`qwen-chat login`)")


def _replace_token_hint(token: str | None) -> str:
    """How to replace the token in use: a new `qwen-chat login` does not help while one found earlier is set."""
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):  # huggingface_hub reads the second one too
        if token is not None and os.environ.get(variable, "").strip() == token:
            return f"it comes from {variable}, which is used before any stored login: fix or unset {variable}"
    try:
        from_hf_login = token is not None and _hf_stored_token() == token
    except Exception:  # a broken token file: the token in use came from elsewhere
        from_hf_login = False
    if from_hf_login:
        return ("it comes from huggingface_hub's own login, which is used before the one `qwen-chat login` stores: "
                "replace it with `hf auth login`, or remove it with `hf auth logout`")
    return "run `qwen-chat login` to replace it"


def _auth_error(status: int | None, repo: str, token: str | None, gated: bool) -> HubError | None:
    """401 and 403 say different things with and without a token."""
    if status == 401:
        return HubError(token_refused_message(repo, token) if token else needs_token_message(repo), status=status)
    if status == 403 or gated:
        return HubError(no_access_message(repo) if token else gated_message(repo), status=status)
    return None


def map_error(exc: BaseException, repo: str, path: str | None = None, revision: str | None = None,
              token: str | None = None) -> HubError:
    """A huggingface_hub / httpx exception as a HubError with an actionable message; `token` is the one sent."""
    what = f"{repo}/{path}" if path else repo
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, OfflineModeIsEnabled) or (isinstance(exc, LocalEntryNotFoundError) and offline()):
        return HubError(OFFLINE_MESSAGE)
    status = _status(exc)
    gated = isinstance(exc, GatedRepoError)  # a RepositoryNotFoundError too
    if isinstance(exc, RepositoryNotFoundError) and not gated and status == 401 and not token:
        # without a token the hub answers 401 for a private repo and for one that does not exist alike
        return HubError(f"repo not found: {repo}: check the name. If it is private or gated, "
                        + gated_message(repo).split(": ", 1)[1], status=status)
    auth = _auth_error(status, repo, token, gated)
    if auth is not None:
        return auth
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"revision {revision!r} not found in {repo}: check the name of the branch, tag or commit",
                        status=status)
    if isinstance(exc, EntryNotFoundError):
        return HubError(f"file not found on the hub: {what}; the catalog may be out of date", status=status)
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"repo not found: {repo}: check the name", status=status)
    if status == 404:
        return HubError(f"not found on the hub: {what}: check the name", status=status)
    if status == 429:
        return HubError("the hub is rate limiting requests; wait a minute and try again", status=status,
                        retryable=True)
    if status is not None and status >= 500:
        return HubError(f"the hub had a server error ({status}) for {what}; try again", status=status,
                        retryable=True)
    if status is not None:
        return HubError(f"the hub refused the request for {what} (HTTP {status}): {_first_line(exc)}", status=status)
    if _is_connection_error(exc):
        return HubError(f"cannot reach the hub at {endpoint()} ({_first_line(exc)}): check the network connection "
                        "(or set HF_HUB_OFFLINE=1 to use only models already on disk)", retryable=True)
    return HubError(f"hub request for {what} failed: {_first_line(exc)}")


def error_for_status(status: int, headers: dict[str, str], repo: str, path: str,
                     token: str | None = None) -> HubError:
    """For a raw response (our own downloads): the same messages as `map_error`; `token` is the one sent."""
    code = headers.get("x-error-code") or headers.get("X-Error-Code") or ""
    auth = _auth_error(status, repo, token, code == "GatedRepo")
    if auth is not None:
        return auth
    if code == "RepoNotFound":
        return HubError(f"repo not found: {repo}: check the name", status=status)
    if code == "RevisionNotFound":
        return HubError(f"the pinned commit of {repo} is gone from the hub; run the pull again", status=status)
    if code == "EntryNotFound" or status == 404:
        return HubError(f"file not found on the hub: {repo}/{path}; the catalog may be out of date", status=status)
    if status == 429 or status >= 500:
        text = "is rate limiting requests" if status == 429 else f"had a server error ({status})"
        return HubError(f"the hub {text} for {repo}/{path}; try again", status=status, retryable=True)
    return HubError(f"the hub refused {repo}/{path} (HTTP {status})", status=status)


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, transport_errors()) and not isinstance(exc, HfHubHTTPError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


# --- token ---------------------------------------------------------------------------------------------------------


def token() -> str | None:
    """HF_TOKEN, then huggingface_hub's stored login, then the system keyring (`qwen-chat login`)."""
    env = os.environ.get("HF_TOKEN", "").strip()
    if env:
        return env
    try:
        stored = _hf_stored_token()
    except Exception:  # a broken token file must not stop anonymous downloads
        stored = None
    if stored:
        return stored
    try:
        import keyring
        from keyring.errors import KeyringError

        try:
            return keyring.get_password(KEYRING_SERVICE, KEYRING_USER) or None
        except KeyringError:
            return None
    except Exception:  # no usable keyring backend
        return None


def store_token(value: str) -> None:
    """Keep the token in the system keyring only (never in a config file or a log)."""
    value = value.strip()
    if not value:
        raise HubError("empty token: paste a token from https://huggingface.co/settings/tokens")
    try:
        import keyring

        keyring.set_password(KEYRING_SERVICE, KEYRING_USER, value)
    except Exception as exc:  # keyring backends raise many kinds of errors
        raise HubError(f"cannot store the token in the system keyring ({type(exc).__name__}); "
                       "set the HF_TOKEN environment variable instead") from None
