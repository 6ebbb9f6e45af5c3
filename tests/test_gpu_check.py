"""bench/gpu_check.py, the GPU check, in its CPU mode on a tiny random-weight model: the same code the GPU machine
runs (GGUF writing, the plan, the engine load and llama.cpp's buffers, the calibration fit, the predictions,
the summary), so that it cannot rot between the sessions that have a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from gpu_check_lib import SHAPES, buffers, fit_params, llama_bench, write_gguf  # noqa: E402


def test_the_cpu_mode_runs_end_to_end_on_a_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, str(BENCH / "gpu_check.py"), "--mode", "cpu", "--shapes", "tiny",
                           "--out", str(out), "--workdir", str(tmp_path / "models")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "cpu" and "errors" not in data, data.get("errors")
    assert data["detection"]["gpus"] == [] and data["shapes"]["tiny"]["bytes"] > 0
    plan = data["plans"][0]
    assert plan["shape"] == "tiny" and plan["load"].startswith("loaded")
    assert abs(float(plan["ram_error"].rstrip("%"))) < 25  # the planner against llama.cpp's own buffers
    speed = data["speeds"][0]
    assert speed["engine"]["decode"] > 0 and speed["engine"]["prompt"] > 0
    assert speed["predicted_table"]["decode"] > 0 and speed["predicted_calibrated"]["measured_rates"]
    assert speed["llama_bench"].get("status", "").startswith("not available") or speed["llama_bench"]["decode"]
    fit = data["calibration"]["gpu_fit"]
    assert fit["measured"] and fit["layer_seconds"] >= 0 and fit["bandwidth"] > 0
    assert any(row["model"] == "qwen3-30b-a3b" and "experts" in row["plan"] for row in data["paper_plans"])
    assert data["summary"] and done.stdout.strip().splitlines()[-1] == data["summary"][-1]


def test_llama_cpp_buffer_lines_split_into_gpu_and_host() -> None:
    lines = ["load_tensors:        CUDA0 model buffer size =  4403.49 MiB",
             "load_tensors:   CPU_Mapped model buffer size =   333.84 MiB",
             "llama_kv_cache:      CUDA0 KV buffer size =  5760.00 MiB",
             "llama_context:      CUDA0 compute buffer size =   304.75 MiB",
             "llama_context:  CUDA_Host compute buffer size =    16.01 MiB",
             "llama_context:  CUDA_Host  output buffer size =     0.58 MiB"]
    assert buffers(lines) == {"gpu": {"model": 4403.49, "KV": 5760.0, "compute": 304.75},
                              "host": {"model": 333.84, "compute": 16.01, "output": 0.58}}


def test_fit_params_answer_is_read_and_missing_tools_say_so(tmp_path: Path) -> None:
    fake = tmp_path / "llama-fit-params"
    answer = r'-c 40960 -ngl 49 -ot "blk\.0\.ffn_(up|down|gate_up|gate)_(ch|)exps=CPU,blk\.1\.ffn_down.*=CPU"'
    fake.write_text(f"#!/bin/sh\necho 'fit: log line' >&2\necho '{answer}'\n")
    fake.chmod(0o755)
    got = fit_params(fake, tmp_path / "m.gguf", 40960, "f16", True)
    assert got["status"] == "ok" and got["n_gpu_layers"] == 49 and got["cpu_ffn_layers"] == [0, 1]
    assert fit_params(None, tmp_path / "m.gguf", 4096, "f16", True)["status"].startswith("not available")
    assert llama_bench(None, tmp_path / "m.gguf", None, 2, 480, 16)["status"].startswith("not available")


@pytest.mark.parametrize("name", ["tiny"])
def test_written_shapes_load_with_their_planned_sizes(tmp_path: Path, name: str) -> None:
    from qwen_chat.gguf.files import read_model_info

    path = tmp_path / f"{name}.gguf"
    written = write_gguf(path, SHAPES[name])
    info = read_model_info(path)
    assert info.architecture == "qwen3" and info.block_count == SHAPES[name].layers
    assert written["bytes"] == path.stat().st_size
