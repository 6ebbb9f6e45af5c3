"""qwen-chat's engine against llama.cpp itself: decode (tg) and prompt (pp) speed, same model, same threads.

Alternating, it measures per round:
  (a) llama.cpp's own speed: the `llama-bench` binary when --llama-bench is given (pp at depth 0 with the
      engine's prompt length; tg of --tokens tokens after a KV cache of that prompt, as the engine decodes), and
      llama.cpp's in-process `llama_perf_context` counters of the engine's own context (time inside llama_decode)
  (b) plain llama-cpp-python: `create_completion(stream=True)` on a second Llama with the same settings
  (c) qwen-chat's `Engine`, through its events, taken as the TUI takes them (see AppSink)
and prints the medians and the ratios to llama.cpp.

Each Python side runs in its own worker process: in one process, llama.cpp driven from two threads (the engine's
thread and a plain Llama on the main thread) has two OpenMP thread teams, more threads than this machine's 2 cores,
and decoding ran up to a third slower on both sides (66 vs 45 tokens/s; OMP_WAIT_POLICY and GOMP_SPINCOUNT only
move the loss around). The app drives llama.cpp from its one engine thread; so does each worker here.

Build llama-bench from the llama.cpp that llama-cpp-python 0.3.36 vendors (under /tmp; never commit it):
  pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/sdist
  tar xzf /tmp/sdist/llama_cpp_python-0.3.36.tar.gz -C /tmp/sdist
  cd /tmp/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp
  cmake -B build -DLLAMA_CURL=OFF -DGGML_NATIVE=ON && cmake --build build --target llama-bench -j2

Usage: python bench/engine_vs_llamacpp.py [MODEL.gguf] [--llama-bench PATH] [--runs N] [--tokens N] [--threads N]
Without a model path it uses the real Qwen2.5-Coder-0.5B test model (fetched from PyPI like the tests do).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

_ONES = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _in_words(n: int) -> str:
    return _ONES[n] if n < 20 else _TENS[n // 10] + ("-" + _ONES[n % 10] if n % 10 else "")


# ~300 tokens: a prompt evaluation long enough (~1 s here) that a scheduling hiccup does not decide its speed, and
# one ubatch (under 512) on both sides; the answer goes on well past --tokens without an end-of-turn token.
PROMPT_TEXT = ("Write the numbers from 1 to 1000 in words, one per line, with no other text. The first ones, for "
               "reference: " + ", ".join(_in_words(n) for n in range(1, 81))
               + ". Start again at one and go on until one thousand.")
N_CTX = 2048
N_BATCH = 512  # the engine's; llama-bench's ubatch is 512 too, so a prompt below it is one ubatch on both sides


WARMUP = dict(temperature=0.0, top_k=20, top_p=0.8, min_p=0.0, presence_penalty=0.0, seed=1)


@dataclass
class Speeds:
    pp: float  # prompt tokens per second
    tg: float  # generated tokens per second after the first
    perf_pp: float = 0.0  # llama.cpp's own counters for the same calls (time inside llama_decode)
    perf_tg: float = 0.0
    tokens: int = 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--llama-bench", type=Path, help="path of the llama-bench binary (optional)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.7, help="0: greedy (default: Qwen's 0.7)")
    parser.add_argument("--presence-penalty", type=float, default=0.0)
    parser.add_argument("--worker", choices=["engine", "python"], help=argparse.SUPPRESS)  # internal
    return parser.parse_args()


def perf_counters(llm) -> tuple[float, float]:
    """(prompt, decode) tokens/s from llama.cpp's in-process counters since the last reset, 0 where none."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(llm._ctx.ctx)
    pp = data.n_p_eval / (data.t_p_eval_ms / 1000) if data.n_p_eval and data.t_p_eval_ms > 0 else 0.0
    tg = data.n_eval / (data.t_eval_ms / 1000) if data.n_eval and data.t_eval_ms > 0 else 0.0
    return pp, tg


def llama_bench(binary: Path, model: Path, threads: int, prompt_tokens: int, gen_tokens: int) -> Speeds:
    """One repetition of llama-bench's pp (depth 0) and tg (after `prompt_tokens` in the cache), no flash attention
    like the engine's default."""

    def run(*test: str) -> float:
        cmd = [str(binary), "-m", str(model), "-t", str(threads), "-fa", "0", "-r", "1", "-o", "json", *test]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return float(json.loads(out)[0]["avg_ts"])

    pp = run("-p", str(prompt_tokens), "-n", "0")
    tg = run("-p", "0", "-n", str(gen_tokens), "-d", str(prompt_tokens))
    return Speeds(pp, tg, tokens=gen_tokens)


def llama_cpp_python(llm, tokens: list[int], gen_tokens: int, sampling: dict) -> Speeds:
    """create_completion(stream=True) from an empty cache; a chunk's time is when its token was sampled."""
    import llama_cpp

    llm.reset()  # the whole prompt is evaluated, as llama-bench's pp does
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    started = time.perf_counter()
    times: list[float] = []
    for chunk in llm.create_completion(prompt=tokens, max_tokens=gen_tokens, stream=True, **sampling):
        finish = chunk["choices"][0]["finish_reason"]
        if finish != "length":  # the last chunk after "length" samples nothing; after "stop" it is the EOG token
            times.append(time.perf_counter())
    perf_pp, perf_tg = perf_counters(llm)
    return Speeds(len(tokens) / (times[0] - started), (len(times) - 1) / (times[-1] - times[0]), perf_pp, perf_tg,
                  len(times))


class AppSink:
    """Takes the engine's events as the TUI does (tui/session_events.py `Inbox.put`): appended to a deque on the
    engine thread, with no thread woken per token (a `queue.Queue` consumer blocked in `get` would be, costing
    ~0.5% of decode speed here); only an answer's end (or a load's) wakes the bench."""

    def __init__(self) -> None:
        self.events: deque = deque()
        self._ended = threading.Event()

    def __call__(self, event: object) -> None:
        from qwen_chat.engines.protocol import Done, Failed, Loaded

        self.events.append(event)
        if isinstance(event, Done | Failed | Loaded):
            self._ended.set()

    def wait(self, timeout: float = 300) -> object:
        """The next Done, Failed or Loaded (earlier events are dropped)."""
        from qwen_chat.engines.protocol import Done, Failed, Loaded

        deadline = time.monotonic() + timeout
        while True:
            while self.events:
                event = self.events.popleft()
                if isinstance(event, Done | Failed | Loaded):
                    return event
            self._ended.clear()
            if not self.events and not self._ended.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("the engine did not answer")


def engine_run(engine, sink: AppSink, prompt: str, gen_tokens: int, sampling: dict, run: int) -> Speeds:
    """One request through the engine's events; its KV cache is emptied first so the whole prompt is evaluated."""
    import llama_cpp

    from qwen_chat.engines.protocol import Done, Failed, GenerateRequest
    from qwen_chat.qwen3.sampling import Sampling

    model = engine._model  # the bench reaches in: clear the cache, read llama.cpp's counters of this context
    model.loop.clear()
    llama_cpp.llama_perf_context_reset(model.llm._ctx.ctx)
    engine.generate(GenerateRequest(run, prompt, Sampling(
        temperature=sampling["temperature"], top_k=sampling["top_k"], top_p=sampling["top_p"],
        min_p=sampling["min_p"], presence_penalty=sampling["presence_penalty"], max_tokens=gen_tokens,
        seed=sampling["seed"])))
    event = sink.wait()
    if isinstance(event, Failed):
        raise RuntimeError(event.message)
    assert isinstance(event, Done)
    perf_pp, perf_tg = perf_counters(model.llm)
    return Speeds(event.prompt_evaluated / event.prompt_seconds, event.tokens_per_second, perf_pp, perf_tg,
                  event.completion_tokens)


def load_engine(model_path: Path, threads: int):
    """The engine as the app loads it (threads pinned)."""
    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import Failed, LoadRequest

    logging.getLogger("qwen_chat").addHandler(logging.NullHandler())
    logging.getLogger("qwen_chat.llama_cpp").propagate = False
    sink = AppSink()
    engine = Engine(sink).start()
    engine.load(LoadRequest(model_path, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads))
    if isinstance(event := sink.wait(), Failed):
        raise SystemExit(event.message)
    return engine, sink


def serve(side: str, model_path: Path, threads: int, prompt: str) -> None:
    """A worker process: load one side, then answer each request line on stdin with a RESULT line."""
    import llama_cpp

    if side == "engine":
        engine, sink = load_engine(model_path, threads)
        plain = engine._model.llm  # only to count the prompt's tokens
    else:
        engine = sink = None
        plain = llama_cpp.Llama(str(model_path), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads,
                                n_batch=N_BATCH, verbose=False)
    tokens = plain.tokenize(prompt.encode(), add_bos=False, special=True)
    print("RESULT " + json.dumps({"prompt_tokens": len(tokens)}), flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        if side == "engine":
            speeds = engine_run(engine, sink, prompt, ask["tokens"], ask["sampling"], ask["run"])
        else:
            sampling = {**ask["sampling"], "frequency_penalty": 0.0, "repeat_penalty": 1.0}  # the engine's
            speeds = llama_cpp_python(plain, tokens, ask["tokens"], sampling)
        print("RESULT " + json.dumps(speeds.__dict__), flush=True)
    if engine is not None:
        engine.shutdown()  # closes its Llama too
    else:
        plain.close()


class Worker:
    """One side in its own process (see the module docstring for why)."""

    def __init__(self, side: str, args: argparse.Namespace) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(args.model), "--worker", side, "--threads", str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.prompt_tokens = int(self._answer()["prompt_tokens"])
        self.run(run=-1, tokens=8, sampling=WARMUP)  # untimed, as llama-bench warms up before each test

    def _answer(self) -> dict:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # llama.cpp may print too: only RESULT lines are ours
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise RuntimeError(f"the worker ended (exit code {self.process.wait()})")

    def run(self, **ask: object) -> Speeds:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(ask) + "\n")
        self.process.stdin.flush()
        return Speeds(**self._answer())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


def report(results: dict[str, list[Speeds]], args: argparse.Namespace, prompt_tokens: int) -> None:
    """Medians, and the best of the runs: other work on the machine only ever slows a run down, so on a shared
    machine the best runs say more about the software than the medians do."""
    print(f"\nmodel {args.model.name}, {args.threads} threads, {args.runs} alternating runs, prompt {prompt_tokens} "
          f"tokens, {args.tokens} generated, temperature {args.temperature}, presence {args.presence_penalty}")
    rows = [("llama.cpp llama-bench", "bench", "pp", "tg")] if "bench" in results else []
    rows += [("llama.cpp counters, engine's ctx", "engine", "perf_pp", "perf_tg"),
             ("llama.cpp counters, python's ctx", "python", "perf_pp", "perf_tg"),
             ("llama-cpp-python create_completion", "python", "pp", "tg"), ("qwen-chat engine", "engine", "pp", "tg")]
    for name, stat in (("median", statistics.median), ("best", max)):
        def value(side: str, field: str, stat=stat) -> float:
            return stat(getattr(speeds, field) for speeds in results[side])

        def ratio(side: str, over: str, pp: str, tg: str) -> str:
            return f"tg {value(side, 'tg') / value(over, tg):.3f}, pp {value(side, 'pp') / value(over, pp):.3f}"

        print(f"\n{name + ' tokens/s':34} {'pp':>8} {'tg':>8}")
        for label, side, pp, tg in rows:
            print(f"{label:34} {value(side, pp):8.1f} {value(side, tg):8.1f}")
        if "bench" in results:
            print(f"{name} ratio engine/llama-bench: {ratio('engine', 'bench', 'pp', 'tg')}")
            print(f"{name} ratio llama-cpp-python/llama-bench: {ratio('python', 'bench', 'pp', 'tg')}")
        print(f"{name} ratio engine/its llama.cpp counters: {ratio('engine', 'engine', 'perf_pp', 'perf_tg')}")
        print(f"{name} ratio llama-cpp-python/its llama.cpp counters: "
              f"{ratio('python', 'python', 'perf_pp', 'perf_tg')}")


def chat_prompt(model_path: Path) -> str:
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt

    template = ChatTemplate(read_model_info(model_path).chat_template)
    return build_prompt(template, [Turn("user", PROMPT_TEXT)], enable_thinking=False)


def measure(args: argparse.Namespace) -> tuple[dict[str, list[Speeds]], int]:
    """`args.runs` rounds, each side once a round, the order rotating so drift in machine load hits all alike."""
    sampling = dict(temperature=args.temperature, top_k=20, top_p=0.8, min_p=0.0,
                    presence_penalty=args.presence_penalty, seed=7)
    workers = {side: Worker(side, args) for side in ("python", "engine")}
    prompt_tokens = workers["engine"].prompt_tokens
    sides = ["bench", "python", "engine"] if args.llama_bench else ["python", "engine"]
    results: dict[str, list[Speeds]] = {side: [] for side in sides}
    try:
        for run in range(args.runs):
            for side in sides[run % len(sides):] + sides[:run % len(sides)]:
                if side == "bench":
                    speeds = llama_bench(args.llama_bench, args.model, args.threads, prompt_tokens, args.tokens)
                else:
                    speeds = workers[side].run(run=run, tokens=args.tokens, sampling=sampling)
                results[side].append(speeds)
            print(f"run {run + 1}: " + ", ".join(
                f"{side} pp {results[side][-1].pp:.1f} tg {results[side][-1].tg:.1f} ({results[side][-1].tokens})"
                for side in sides), flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    return results, prompt_tokens


def main() -> None:
    args = parse_args()
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    if args.worker:
        serve(args.worker, args.model, args.threads, chat_prompt(args.model))
        return
    results, prompt_tokens = measure(args)
    report(results, args, prompt_tokens)


if __name__ == "__main__":
    main()
