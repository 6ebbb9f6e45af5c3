"""`--endpoint URL|NAME`, `--api-key` and `--remote-model` worked out into the server to talk to, for the chat
and for `ask` alike."""

from __future__ import annotations

from dataclasses import dataclass

from qwen_chat.cli import output


class Refused(Exception):
    """The endpoint options cannot be used; the message says why, `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str | None
    model: str | None  # None: the endpoint's first model


def resolve(endpoint: str, api_key: str | None, remote_model: str | None) -> Target:
    """A saved endpoint's name or an http(s) URL, with its key (given, env or keyring) and model."""
    from qwen_chat.config.settings import load_endpoints
    from qwen_chat.engines.http import api_key_for

    problems: list[str] = []
    saved = load_endpoints(problems)
    for problem in problems:
        output.error(problem)
    if endpoint in saved:
        url, model = saved[endpoint].url, remote_model or saved[endpoint].model
    elif endpoint.startswith(("http://", "https://")):
        url, model = endpoint.rstrip("/"), remote_model
    else:
        names = ", ".join(saved) or "none saved yet"
        raise Refused(f"--endpoint takes an http(s) URL or a saved name ({names})", 2)
    return Target(url, api_key or api_key_for(url), model)


def check(target: Target) -> None:
    """That the server answers and serves the model asked for (before a screen opens on it)."""
    from qwen_chat.engines.http import EndpointError, list_models

    try:
        served = [m.get("id") for m in list_models(target.url, target.api_key)]
    except EndpointError as exc:
        raise Refused(str(exc)) from None
    if target.model and target.model not in served:
        raise Refused(f"{target.url} does not serve {target.model}; it serves: {', '.join(map(str, served))}")


def remember(target: Target, given_key: str | None, save_as: str | None) -> None:
    """Keep a key given on the command line in the keyring, and save the endpoint when asked to."""
    from qwen_chat.config.settings import Endpoint, save_endpoint
    from qwen_chat.engines.http import remember_api_key

    if given_key:
        remember_api_key(target.url, given_key)
    if save_as:
        try:
            save_endpoint(Endpoint(save_as, target.url, target.model))
        except OSError as exc:  # a settings.toml that does not parse is never overwritten
            output.error(f"the endpoint was not saved: {exc}")
