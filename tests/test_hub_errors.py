"""What the hub's refusals and failures become, with the real huggingface_hub client against the loopback hub
(tests/hub_server.py): no token, a refused token and a token without access each say what to do; a listing that
fails once is tried again; a model pulled before needs no hub at all."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from hub_server import Hub
from qwen_chat.cli.main import main
from qwen_chat.hub import client as hubmod
from qwen_chat.hub import downloads, model_pull
from qwen_chat.hub.client import HubError, RemoteFile
from qwen_chat.hub.download_queue import DownloadQueue, Job

from helpers import wait_until, write_catalog

REPO = "test/Tiny-GGUF"
FILE = "Tiny-Q4_K_M.gguf"
REFUSED = (r"your Hugging Face token was refused \(401\): it may be mistyped, expired or lack access to "
           f"{REPO}; ")


pytestmark = pytest.mark.usefixtures("memory_keyring")  # conftest.py: keyring in memory, fast retries


@pytest.fixture(scope="module")
def model_files(tiny_hub_files: dict[str, bytes]) -> dict[str, bytes]:
    return dict(tiny_hub_files)


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_files: dict[str, bytes]) -> Path:
    """The models folder, and the user catalog's "tiny": Q4_K_M one file, Q8_0 a split set."""
    folder = tmp_path / "models"
    monkeypatch.setenv("QWEN_CHAT_MODELS_DIR", str(folder))
    split = [(n, len(model_files[n])) for n in model_files if "-of-" in n]
    write_catalog("tiny", REPO, {"Q4_K_M": [(FILE, len(model_files[FILE]))], "Q8_0": split}, name="Tiny",
                  params=1000, native_context=40960)
    return folder


def gated(hub: Hub, files: dict[str, bytes]) -> str:
    """A gated repo whose license the token hf_accepted accepted; hf_other exists too; any other token does not."""
    hub.tokens = {"hf_accepted", "hf_other"}
    return hub.add_repo(REPO, files, gated=True, token="hf_accepted")


def listings(hub: Hub) -> list[int]:
    return [s.status for s in hub.requests() if s.path.startswith(f"/api/models/{REPO}")]


# --- which token problem --------------------------------------------------------------------------------------


def test_no_token_says_the_repository_needs_one(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    gated(hub, model_files)
    with pytest.raises(HubError, match=rf"this repository \({REPO}\) needs a Hugging Face token and none is set"
                                       ".*log in with `qwen-chat login`") as caught:
        model_pull.pull("tiny", None, models)
    assert caught.value.status == 401 and "refused" not in str(caught.value)


def test_a_refused_stored_token_says_replace_it(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    gated(hub, model_files)
    hubmod.store_token("hf_mistyped")
    with pytest.raises(HubError, match=REFUSED + "run `qwen-chat login` to replace it$") as caught:
        model_pull.pull("tiny", None, models)
    assert caught.value.status == 401 and "needs a Hugging Face token" not in str(caught.value)
    hubmod.store_token("hf_accepted")  # what the message says to do
    assert model_pull.pull("tiny", None, models)[0].is_file()


def test_a_refused_hf_token_says_fix_the_variable(hub: Hub, models: Path, model_files: dict[str, bytes],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`qwen-chat login` cannot help while HF_TOKEN is set: it is used first."""
    gated(hub, model_files)
    hubmod.store_token("hf_accepted")
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    with pytest.raises(HubError, match=REFUSED + "it comes from HF_TOKEN.*fix or unset HF_TOKEN"):
        model_pull.pull("tiny", None, models)


def test_a_refused_huggingface_login_says_which_login(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    from huggingface_hub import constants

    gated(hub, model_files)
    Path(constants.HF_TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
    Path(constants.HF_TOKEN_PATH).write_text("hf_revoked")
    with pytest.raises(HubError, match=REFUSED + "it comes from huggingface_hub's own login.*`hf auth login`"):
        model_pull.pull("tiny", None, models)


def test_a_refused_token_on_a_public_repo(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    """The hub refuses a token it does not know even where none is needed: the token is the thing to fix."""
    hub.add_repo(REPO, model_files)
    hub.tokens = {"hf_accepted"}
    hubmod.store_token("hf_mistyped")
    with pytest.raises(HubError, match=REFUSED):
        model_pull.pull("tiny", None, models)


def test_a_token_without_access_is_told_to_accept_the_license(hub: Hub, models: Path,
                                                              model_files: dict[str, bytes]) -> None:
    gated(hub, model_files)
    hubmod.store_token("hf_other")
    with pytest.raises(HubError, match=f"{REPO} is gated or private and your Hugging Face token has no access to "
                                       rf"it \(403\): accept its license at https://huggingface.co/{REPO} with the "
                                       "account the token belongs to") as caught:
        model_pull.pull("tiny", None, models)
    assert caught.value.status == 403


def test_file_downloads_tell_the_same_apart(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    """Our own downloader (not huggingface_hub) reads the raw answer: the same three messages."""
    commit = gated(hub, model_files)
    remote = RemoteFile(FILE, len(model_files[FILE]))
    with pytest.raises(HubError, match="needs a Hugging Face token and none is set"):
        downloads.download_file(REPO, remote, commit, models)
    with pytest.raises(HubError, match=REFUSED + "run `qwen-chat login` to replace it"):
        downloads.download_file(REPO, remote, commit, models, token="hf_mistyped")
    with pytest.raises(HubError, match=r"has no access to it \(403\)"):
        downloads.download_file(REPO, remote, commit, models, token="hf_other")
    assert downloads.download_file(REPO, remote, commit, models, token="hf_accepted").is_file()


def test_pull_prints_the_refusal(hub: Hub, models: Path, model_files: dict[str, bytes],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    gated(hub, model_files)
    hubmod.store_token("hf_mistyped")
    assert main(["pull", "tiny:Q4_K_M"]) == 1
    err = capsys.readouterr().err
    assert "your Hugging Face token was refused (401)" in err and "qwen-chat login" in err
    assert "hf_mistyped" not in err  # the token itself is never shown


# --- a failing listing ---------------------------------------------------------------------------------------


def test_one_server_error_on_the_listing_is_retried(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    hub.add_repo(REPO, model_files)
    hub.fault_listing(REPO, status=500, times=1)
    assert model_pull.pull("tiny", None, models)[0].read_bytes() == model_files[FILE]
    assert listings(hub) == [500, 200]


def test_a_listing_that_keeps_failing_says_so(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    hub.add_repo(REPO, model_files)
    hub.fault_listing(REPO, status=502)
    with pytest.raises(HubError, match=rf"the hub had a server error \(502\) for {REPO}; try again"):
        model_pull.pull("tiny", None, models)
    assert listings(hub) == [502] * (1 + downloads.SERVER_ERROR_RETRIES)
    assert hub.downloads() == []


def test_a_refusal_is_not_retried(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    gated(hub, model_files)
    with pytest.raises(HubError, match="needs a Hugging Face token"):
        model_pull.pull("tiny", None, models)
    assert listings(hub) == [401]


# --- a model already pulled needs no hub -------------------------------------------------------------------


def pulled_then_hub_down(hub: Hub, models: Path, files: dict[str, bytes], ref: str) -> list[Path]:
    hub.add_repo(REPO, files)
    paths = model_pull.pull(ref, None, models)
    hub.fail_all = 500  # from now on every request would fail
    hub.reset_counts()
    return paths


def test_a_pulled_model_is_found_without_the_hub(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    paths = pulled_then_hub_down(hub, models, model_files, "tiny")
    assert model_pull.already_downloaded("tiny") == paths
    assert model_pull.pull("tiny", None, models) == paths
    assert hub.requests() == []


def test_a_pulled_split_set_is_found_without_the_hub(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    shards = pulled_then_hub_down(hub, models, model_files, "tiny:Q8_0")
    assert len(shards) > 1 and model_pull.pull("tiny:Q8_0", None, models) == shards
    assert hub.requests() == []


def test_a_file_changed_since_it_was_verified_is_listed_again(hub: Hub, models: Path,
                                                              model_files: dict[str, bytes]) -> None:
    [path] = pulled_then_hub_down(hub, models, model_files, "tiny")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched: the record no longer fits
    assert model_pull.already_downloaded("tiny") is None
    with pytest.raises(HubError, match=r"server error \(500\)"):
        model_pull.pull("tiny", None, models)
    assert listings(hub) == [500] * (1 + downloads.SERVER_ERROR_RETRIES)


def test_cli_pull_says_already_downloaded(hub: Hub, models: Path, model_files: dict[str, bytes],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    [path] = pulled_then_hub_down(hub, models, model_files, "tiny")
    assert main(["pull", "tiny:Q4_K_M"]) == 0
    captured = capsys.readouterr()
    assert "tiny:Q4_K_M is already downloaded and verified; nothing to fetch." in captured.err
    assert f"ready: qwen-chat --model {path}" in captured.out
    assert hub.requests() == []


def test_download_queue_says_already_downloaded(hub: Hub, models: Path, model_files: dict[str, bytes]) -> None:
    [path] = pulled_then_hub_down(hub, models, model_files, "tiny")
    seen: list[Job] = []
    lock = threading.Lock()

    def listen(job: Job) -> None:
        with lock:
            seen.append(job)

    queue = DownloadQueue(listen)
    try:
        queue.add("tiny:Q4_K_M")
        job = wait_until(lambda: next((j for j in queue.jobs() if j.state in ("done", "failed")), None),
                         what="the job to end")
    finally:
        queue.close()
    assert job.state == "done", job.message
    assert job.message == "already downloaded and verified; nothing fetched"
    assert job.path == path and job.done == job.total == path.stat().st_size
    assert hub.requests() == []
