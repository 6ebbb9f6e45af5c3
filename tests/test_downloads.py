"""Downloads with the real huggingface_hub client against a loopback hub (tests/hub_server.py); never the internet."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import pytest

from hub_server import Hub
from qwen_chat.hub import client as hubmod
from qwen_chat.hub import downloads, model_pull
from qwen_chat.hub.client import HubError, RemoteFile
from qwen_chat.hub.downloads import DownloadCancelled, DownloadError
from qwen_chat.system.paths import config_dir

from helpers import MemoryKeyring, wait_until, write_catalog

REPO = "test/Tiny-GGUF"
MiB = 1024 * 1024


pytestmark = pytest.mark.usefixtures("memory_keyring")  # conftest.py: keyring in memory, fast retries


@pytest.fixture(scope="module")
def model_files(tiny_hub_files: dict[str, bytes]) -> dict[str, bytes]:
    return {**tiny_hub_files, "big.gguf": b"GGUF" + os.urandom(3 * MiB)}  # enough bytes to drop and resume inside


def catalog_for(files: dict[str, bytes], repo: str = REPO) -> None:
    """The user catalog's model "tiny": Q4_K_M the single file, Q8_0 (estimated) the split set."""
    split = [(n, len(files[n])) for n in files if "-of-" in n]
    write_catalog("tiny", repo, {"Q4_K_M": [("Tiny-Q4_K_M.gguf", len(files["Tiny-Q4_K_M.gguf"]))], "Q8_0": split},
                  name="Tiny", estimated={"Q8_0"}, params=1000, native_context=40960)


@pytest.fixture
def repo(hub: Hub, model_files: dict[str, bytes]) -> str:
    commit = hub.add_repo(REPO, {**model_files, "README.md": b"# tiny\n"})
    catalog_for(model_files)
    return commit


def remote_for(name: str, files: dict[str, bytes]) -> RemoteFile:
    return RemoteFile(name, len(files[name]), hashlib.sha256(files[name]).hexdigest())


def dest(tmp_path: Path) -> Path:
    return tmp_path / "models"


# --- listing ---------------------------------------------------------------------------------------------------------


def test_listing_has_sizes_and_sha256_at_a_pinned_commit(hub: Hub, model_files: dict[str, bytes]) -> None:
    old = hub.add_repo(REPO, {"a.gguf": b"GGUF old"})
    new = hub.add_repo(REPO, {"a.gguf": b"GGUF newer bytes", "README.md": b"x"})
    commit, files = hubmod.list_files(REPO)
    assert commit == new
    by_path = {f.path: f for f in files}
    assert by_path["a.gguf"] == RemoteFile("a.gguf", 16, hashlib.sha256(b"GGUF newer bytes").hexdigest())
    assert by_path["README.md"].sha256 is None and by_path["README.md"].size == 1
    commit, files = hubmod.list_files(REPO, revision=old)
    assert commit == old
    assert files == [RemoteFile("a.gguf", 8, hashlib.sha256(b"GGUF old").hexdigest())]
    assert hubmod.resolve_url(REPO, "a.gguf", old) == f"{hub.url}/{REPO}/resolve/{old}/a.gguf"
    with pytest.raises(HubError, match="revision 'nope' not found"):
        hubmod.list_files(REPO, revision="nope")


# --- clean downloads ---------------------------------------------------------------------------------------------


def test_pull_downloads_and_verifies(hub: Hub, repo: str, model_files: dict[str, bytes],
                                     tmp_path: Path) -> None:
    seen = []
    paths = model_pull.pull("tiny", None, dest(tmp_path), progress=lambda d, t, n: seen.append((d, t, n)))
    assert paths == [dest(tmp_path) / "Tiny-Q4_K_M.gguf"]
    assert paths[0].read_bytes() == model_files["Tiny-Q4_K_M.gguf"]
    size = len(model_files["Tiny-Q4_K_M.gguf"])
    assert seen[-1] == (size, size, "Tiny-Q4_K_M.gguf")
    assert all(s.path.startswith(f"/{REPO}/resolve/{repo}/") for s in hub.downloads())  # the pinned commit
    assert not list(dest(tmp_path).glob(".*.partial*"))
    verified = json.loads((dest(tmp_path) / ".verified.json").read_text())
    assert verified["Tiny-Q4_K_M.gguf"]["sha256"] == hashlib.sha256(model_files["Tiny-Q4_K_M.gguf"]).hexdigest()


def test_pull_split_set(hub: Hub, repo: str, model_files: dict[str, bytes], tmp_path: Path) -> None:
    parts = sorted(n for n in model_files if "-of-" in n)
    assert len(parts) > 1
    paths = model_pull.pull("tiny:q8_0", None, dest(tmp_path))
    assert [p.name for p in paths] == parts
    assert all(p.read_bytes() == model_files[p.name] for p in paths)
    assert model_pull.pull("tiny", "Q8_0", dest(tmp_path)) == paths


def test_already_downloaded_is_not_fetched_or_rehashed(hub: Hub, repo: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    model_pull.pull("tiny", None, dest(tmp_path))
    hub.reset_counts()

    def no_hash(*a: object, **k: object) -> None:
        raise AssertionError("re-hashed a verified file")

    monkeypatch.setattr(downloads, "_hash_file", no_hash)
    model_pull.pull("tiny", None, dest(tmp_path))
    assert hub.downloads() == []


def test_file_in_hf_cache_is_reused(hub: Hub, repo: str, model_files: dict[str, bytes],
                                    tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    cached = hf_hub_download(REPO, "Tiny-Q4_K_M.gguf", revision=repo)
    assert Path(cached).read_bytes() == model_files["Tiny-Q4_K_M.gguf"]
    hub.reset_counts()
    paths = model_pull.pull("tiny", None, dest(tmp_path))
    assert hub.downloads() == []
    assert paths[0].read_bytes() == model_files["Tiny-Q4_K_M.gguf"]


# --- interruptions -------------------------------------------------------------------------------------------------


def test_dropped_connection_resumes(hub: Hub, repo: str, model_files: dict[str, bytes],
                                    tmp_path: Path) -> None:
    hub.fault(REPO, "big.gguf", drop_after=1 * MiB + 123, times=2)
    remote = remote_for("big.gguf", model_files)
    path = downloads.download_file(REPO, remote, repo, dest(tmp_path))
    assert path.read_bytes() == model_files["big.gguf"]
    gets = hub.downloads("big.gguf")
    assert [g.range_start for g in gets] == [0, MiB + 123, 2 * (MiB + 123)]
    assert hub.bytes_served("big.gguf") <= remote.size + 10 * MiB
    assert hub.bytes_served("big.gguf") == remote.size  # not a byte fetched twice


def test_connection_that_keeps_dropping_gives_up_and_keeps_partial(hub: Hub, repo: str,
                                                                   model_files: dict[str, bytes],
                                                                   tmp_path: Path) -> None:
    hub.fault(REPO, "big.gguf", drop_after=0)
    with pytest.raises(DownloadError, match="kept dropping"):
        downloads.download_file(REPO, remote_for("big.gguf", model_files), repo, dest(tmp_path))
    assert (dest(tmp_path) / ".big.gguf.partial").exists()


def test_killed_process_resumes_from_partial(hub: Hub, repo: str, model_files: dict[str, bytes],
                                             tmp_path: Path) -> None:
    remote = remote_for("big.gguf", model_files)
    hub.fault(REPO, "big.gguf", delay=0.02, chunk_size=16 * 1024)
    script = ("import json, sys; from pathlib import Path; from qwen_chat.hub import downloads; "
              "from qwen_chat.hub.client import RemoteFile; a = json.loads(sys.argv[1]); "
              "downloads.download_file(a[0], RemoteFile(*a[1]), a[2], Path(a[3]), chunk=4096)")
    args = json.dumps([REPO, [remote.path, remote.size, remote.sha256], repo, str(dest(tmp_path))])
    proc = subprocess.Popen([sys.executable, "-c", script, args], env=dict(os.environ))
    partial = dest(tmp_path) / ".big.gguf.partial"
    try:
        def partly_downloaded() -> bool:
            if partial.exists() and partial.stat().st_size >= 256 * 1024:
                return True
            assert proc.poll() is None, "the download finished before it could be killed"
            return False

        wait_until(partly_downloaded, timeout=60, what="256 KiB of the partial file")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    kept = partial.stat().st_size
    assert 0 < kept < remote.size
    hub.clear_faults()
    hub.reset_counts()
    path = downloads.download_file(REPO, remote, repo, dest(tmp_path))
    assert path.read_bytes() == model_files["big.gguf"]
    gets = hub.downloads("big.gguf")
    assert gets[0].range_start == kept and gets[0].headers.get("Range") == f"bytes={kept}-"
    assert hub.bytes_served("big.gguf") == remote.size - kept


def test_partial_of_another_revision_is_not_resumed(hub: Hub, repo: str, model_files: dict[str, bytes],
                                                    tmp_path: Path) -> None:
    folder = dest(tmp_path)
    folder.mkdir()
    (folder / ".big.gguf.partial").write_bytes(b"GGUF" + b"\0" * 5000)
    (folder / ".big.gguf.partial.json").write_text(json.dumps({"repo": REPO, "commit": "0" * 40}))
    path = downloads.download_file(REPO, remote_for("big.gguf", model_files), repo, folder)
    assert path.read_bytes() == model_files["big.gguf"]
    assert hub.downloads("big.gguf")[0].range_start == 0


def test_cancel_keeps_partial(hub: Hub, repo: str, model_files: dict[str, bytes], tmp_path: Path) -> None:
    stop = threading.Event()
    hub.fault(REPO, "big.gguf", chunk_size=64 * 1024)
    with pytest.raises(DownloadCancelled, match="partial file is kept"):
        downloads.download_file(REPO, remote_for("big.gguf", model_files), repo, dest(tmp_path),
                                progress=lambda d, t, n: d > MiB and stop.set(), cancel=stop)
    kept = (dest(tmp_path) / ".big.gguf.partial").stat().st_size
    assert kept > MiB
    hub.reset_counts()
    downloads.download_file(REPO, remote_for("big.gguf", model_files), repo, dest(tmp_path))
    assert hub.downloads("big.gguf")[0].range_start == kept


# --- hub errors ----------------------------------------------------------------------------------------------------


def test_missing_repo_and_file(hub: Hub, model_files: dict[str, bytes], tmp_path: Path) -> None:
    catalog_for(model_files, repo="test/Missing-GGUF")
    with pytest.raises(HubError, match="repo not found: test/Missing-GGUF: check the name"):
        model_pull.pull("tiny", None, dest(tmp_path))
    commit = hub.add_repo("test/Missing-GGUF", {"other.gguf": b"GGUF"})
    with pytest.raises(DownloadError, match="Tiny-Q4_K_M.gguf not found in test/Missing-GGUF"):
        model_pull.pull("tiny", None, dest(tmp_path))
    with pytest.raises(HubError, match="file not found on the hub"):
        downloads.download_file("test/Missing-GGUF", RemoteFile("gone.gguf", 10, None), commit, dest(tmp_path))


def test_gated_repo_says_how_to_get_access(hub: Hub, model_files: dict[str, bytes], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    hub.add_repo(REPO, model_files, gated=True, token="hf_accepted")
    catalog_for(model_files)
    expected = f"accept its license at https://huggingface.co/{REPO} and log in with `qwen-chat login` or set HF_TOKEN"
    with pytest.raises(HubError, match=expected.replace("`", ".")) as info:
        model_pull.pull("tiny", None, dest(tmp_path))
    assert info.value.status == 401
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match="gated or private") as info:
        model_pull.pull("tiny", None, dest(tmp_path))
    assert info.value.status == 403
    monkeypatch.setenv("HF_TOKEN", "hf_accepted")
    assert model_pull.pull("tiny", None, dest(tmp_path))[0].is_file()


def test_gated_file_download_without_token(hub: Hub, model_files: dict[str, bytes], tmp_path: Path) -> None:
    commit = hub.add_repo(REPO, model_files, gated=True, token="hf_accepted")
    with pytest.raises(HubError, match="gated or private"):
        downloads.download_file(REPO, remote_for("big.gguf", model_files), commit, dest(tmp_path))


def test_server_errors_are_retried(hub: Hub, repo: str, model_files: dict[str, bytes], tmp_path: Path) -> None:
    hub.fault(REPO, "Tiny-Q4_K_M.gguf", status=503, times=2)
    model_pull.pull("tiny", None, dest(tmp_path))
    assert [g.status for g in hub.downloads()] == [503, 503, 200]


def test_persistent_server_error_is_clear(hub: Hub, repo: str, tmp_path: Path) -> None:
    hub.fault(REPO, "Tiny-Q4_K_M.gguf", status=500)
    with pytest.raises(HubError, match=r"the hub had a server error \(500\).*try again"):
        model_pull.pull("tiny", None, dest(tmp_path))
    assert len(hub.downloads()) == 1 + downloads.SERVER_ERROR_RETRIES


def test_sha_mismatch_deletes_the_bad_file(hub: Hub, repo: str, tmp_path: Path) -> None:
    hub.fault(REPO, "Tiny-Q4_K_M.gguf", wrong_bytes=True)
    with pytest.raises(DownloadError, match="sha256 .* does not match.*bad download was deleted"):
        model_pull.pull("tiny", None, dest(tmp_path))
    assert [p.name for p in dest(tmp_path).iterdir() if "Tiny" in p.name] == []


def test_lfs_pointer_is_reported(hub: Hub, repo: str, tmp_path: Path) -> None:
    hub.fault(REPO, "Tiny-Q4_K_M.gguf", lfs_pointer=True)
    with pytest.raises(DownloadError, match="Git LFS pointer for Tiny-Q4_K_M.gguf"):
        model_pull.pull("tiny", None, dest(tmp_path))
    assert [p.name for p in dest(tmp_path).iterdir() if "Tiny" in p.name] == []


def test_hub_file_name_escaping_the_folder_is_refused(hub: Hub, tmp_path: Path) -> None:
    commit = hub.add_repo("test/Evil", {"../evil.gguf": b"GGUF evil", "a\\b.gguf": b"GGUF"})
    _, files = hubmod.list_files("test/Evil")
    for remote in files:
        with pytest.raises(HubError, match="outside the models folder"):
            downloads.download_file("test/Evil", remote, commit, dest(tmp_path))
    with pytest.raises(HubError, match="outside"):
        downloads.download_file("test/Evil", RemoteFile("/etc/x.gguf", 4), commit, dest(tmp_path))
    assert not (tmp_path / "evil.gguf").exists() and hub.downloads() == []


# --- disk space --------------------------------------------------------------------------------------------------


def test_disk_full_before_start(hub: Hub, repo: str, model_files: dict[str, bytes], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(downloads.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    needed = downloads.human(len(model_files["Tiny-Q4_K_M.gguf"]))
    with pytest.raises(DownloadError, match=f"needs {needed}, 1.0 KB free on {dest(tmp_path)}"):
        model_pull.pull("tiny", None, dest(tmp_path))
    assert hub.downloads() == []


def test_disk_full_during_download_keeps_partial(hub: Hub, repo: str, model_files: dict[str, bytes],
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = [0]
    real_write = downloads._write

    def filling(f: object, data: bytes) -> None:
        if written[0] + len(data) > MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(f, data)
        written[0] += len(data)

    monkeypatch.setattr(downloads, "_write", filling)
    remote = remote_for("big.gguf", model_files)
    with pytest.raises(DownloadError, match="disk is full.*run the pull again to resume"):
        downloads.download_file(REPO, remote, repo, dest(tmp_path))
    kept = (dest(tmp_path) / ".big.gguf.partial").stat().st_size
    assert kept == written[0] > 0
    monkeypatch.setattr(downloads, "_write", real_write)
    hub.reset_counts()
    assert downloads.download_file(REPO, remote, repo, dest(tmp_path)).read_bytes() == model_files["big.gguf"]
    assert hub.downloads("big.gguf")[0].range_start == kept


# --- offline and tokens ------------------------------------------------------------------------------------------


def test_offline_makes_no_connection(hub: Hub, repo: str, model_files: dict[str, bytes], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_connect(*a: object, **k: object) -> None:
        raise AssertionError("a connection was attempted while offline")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", no_connect)
    started = time.monotonic()
    with pytest.raises(HubError, match="offline: only models already on disk can be used"):
        model_pull.pull("tiny", None, dest(tmp_path))
    with pytest.raises(HubError, match="offline"):
        downloads.download_file(REPO, remote_for("big.gguf", model_files), repo, dest(tmp_path))
    assert time.monotonic() - started < 2
    dest(tmp_path).mkdir()
    (dest(tmp_path) / "Tiny-Q4_K_M.gguf").write_bytes(model_files["Tiny-Q4_K_M.gguf"])
    assert model_pull.pull("tiny", None, dest(tmp_path)) == [dest(tmp_path) / "Tiny-Q4_K_M.gguf"]
    assert hub.requests() == []


def test_token_is_kept_in_keyring_only(hub: Hub, model_files: dict[str, bytes], tmp_path: Path,
                                       memory_keyring: MemoryKeyring) -> None:
    assert hubmod.token() is None
    hubmod.store_token("hf_secret_value_123")
    assert memory_keyring.store == {("qwen-chat", "huggingface"): "hf_secret_value_123"}
    assert hubmod.token() == "hf_secret_value_123"
    hub.add_repo(REPO, model_files, gated=True, token="hf_secret_value_123")
    catalog_for(model_files)
    assert model_pull.pull("tiny", None, dest(tmp_path))[0].is_file()
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and b"hf_secret_value_123" in p.read_bytes()]
    assert leaks == []
    assert config_dir().is_dir()  # the catalog lives there: the walk above covered it


def test_env_token_comes_first(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    hubmod.store_token("hf_from_keyring")
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert hubmod.token() == "hf_from_env"
    assert hubmod.auth_headers("hf_x")["authorization"] == "Bearer hf_x"
    assert "authorization" not in hubmod.auth_headers(None)


def test_disk_usage_is_the_module_function() -> None:
    assert downloads.shutil is shutil
