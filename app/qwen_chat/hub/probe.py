"""Is the hub reachable? One quick request before the first run offers a download, so that an offline machine
hears it at once instead of after a question and a long timeout.

Any HTTP answer, whatever its status, means the network and the hub are there. The request runs on a daemon
thread joined with a deadline: a name lookup can block longer than any socket timeout (getaddrinfo has none),
and the person waiting must not.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from qwen_chat.hub import client as hub
from qwen_chat.system.http import http_library

PROBE_SECONDS = 2.0
PROBE_PATH = "/api/models/Qwen/Qwen3-8B-GGUF"  # the listing route huggingface_hub's model_info calls


@dataclass(frozen=True)
class HubState:
    reachable: bool
    reason: str  # for an unreachable hub, why, in words; "" when reachable


def probe_hub(timeout: float = PROBE_SECONDS) -> HubState:
    """HF_HUB_OFFLINE answers at once; otherwise one GET to HF_ENDPOINT (or huggingface.co) within `timeout`."""
    if hub.offline():
        return HubState(False, "HF_HUB_OFFLINE is set")
    url = hub.endpoint() + PROBE_PATH
    outcome: list[HubState] = []

    def request() -> None:
        http = http_library()
        try:
            with http.Client(timeout=http.Timeout(timeout), follow_redirects=False, trust_env=True) as client:
                client.get(url, headers=hub.auth_headers(None))
            outcome.append(HubState(True, ""))
        except http.TimeoutException:
            outcome.append(HubState(False, f"{hub.endpoint()} did not answer within {timeout:g} s"))
        except Exception as exc:  # any transport failure: refused, no route, no name, TLS
            outcome.append(HubState(False, f"cannot reach {hub.endpoint()} ({_short(exc)})"))

    thread = threading.Thread(target=request, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.2)
    return outcome[0] if outcome else HubState(False, f"{hub.endpoint()} did not answer within {timeout:g} s")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
