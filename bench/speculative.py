"""Speculative decoding (prompt lookup) against plain llama-cpp-python, on the work drafting is for and on work it
is not: decode speed of the same answers, alternating in one run.

Tasks (the real Qwen2.5-Coder-0.5B test model, Qwen's non-thinking sampling with a fixed seed):
  edit        an attached ~150-line Python file (app/qwen_chat/gguf/header.py) written back with one method renamed
  paraphrase  a 400-word paragraph rewritten with one change
  prose       an open-ended short story (nothing in the prompt to copy)
  list        a numbered Markdown list
Each side runs in its own worker process (two OpenMP thread teams in one process slow both: see
bench/engine_vs_llamacpp.py): "python" is `Llama.create_completion(stream=True)` on the rendered prompt, "engine" is
qwen-chat's Engine (its decode loop with drafting on) on the same prompt text, both from an empty KV cache. Decode
speed is streamed tokens after the first over the time they took (as the app stores it). Also reported: the
engine's acceptance rate and tokens per verification batch, and whether both sides wrote the same text.

Usage: python bench/speculative.py [MODEL.gguf] [--runs N] [--threads N] [--tasks edit,paraphrase,prose,list]
Ends with one line: `speculative: edit 2.31x, paraphrase 1.62x, prose 1.00x, list 0.99x` (medians of the ratios).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from engine_vs_llamacpp import AppSink  # noqa: E402 (after the path is set)

N_CTX = 4096
SAMPLING = dict(temperature=0.7, top_k=20, top_p=0.8, min_p=0.0, presence_penalty=0.0, seed=7)
EDITED_FILE = ROOT / "app/qwen_chat/gguf/header.py"
PARAGRAPH = (
    "The lighthouse on the northern cape was built in 1871 by a small crew of masons who had never seen the sea "
    "before they arrived. They came from the quarries inland, where the granite for the tower was cut, and they "
    "stayed for three summers, living in wooden huts that the wind tried to carry away every autumn. The keeper "
    "who followed them, a widower named Tobias Hale, kept a log in which he wrote the weather, the ships that "
    "passed, and the birds that struck the lantern at night. His entries are short and plain, but over forty "
    "years they add up to a portrait of a coast that changed slowly and then all at once. In the first decade he "
    "counted sailing ships almost every day; by the last, steamers had replaced them, and the fishing boats had "
    "engines that he could hear long before he could see them. He noted the first telegraph line along the coast "
    "road, the first motor car that came up the track to the tower, and the winter when the harbour froze so "
    "hard that children skated out to the moored boats. He rarely wrote about himself. When his daughter married "
    "and moved to the city, the entry for that day records only a south-westerly breeze and a clear horizon. "
    "Historians who have read the log disagree about what to make of its silences. Some see a man who found "
    "comfort in routine and measured his life by the things he could count. Others read the gaps as a kind of "
    "restraint, the habit of someone who believed that a log should hold facts and that feelings belonged "
    "elsewhere. What no one disputes is the value of the record itself. Because Hale measured the rainfall and "
    "the temperature every morning at the same hour, his numbers have been used to study how the climate of the "
    "region shifted over the late nineteenth century. Because he listed every wreck and every rescue, his log "
    "has helped families trace relatives who were lost at sea. The tower still stands, though the lantern is now "
    "automatic and the keeper's cottage has become a small museum. Visitors can read a copy of the log in a glass "
    "case by the door, open at a page from a stormy night in March, when Hale wrote that the light had burned "
    "without fault until dawn and that the sea had been higher than he had ever seen it. On the wall beside the "
    "case hangs a photograph of him standing at the foot of the tower with his daughter, both of them squinting "
    "into the sun, neither of them smiling, as was the custom for photographs at the time.")
TASKS = {
    "edit": ("Here is a Python file:\n\n```python\n{file}```\n\nRename the method `skip_string` to `skip_str` "
             "everywhere in this file. Write the whole file back, unchanged except for the rename, in one "
             "```python block, with no other text.", 1800),
    "paraphrase": ("Rewrite this paragraph exactly as it is, changing only the year 1871 to 1872. Write only the "
                   "paragraph.\n\n" + PARAGRAPH, 700),
    "prose": ("Write a short story about a clockmaker who discovers that one of her clocks runs backwards.", 256),
    "list": ("Give a numbered Markdown list of 25 practical tips for keeping a vegetable garden healthy, one short "
             "sentence each.", 256),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--no-speculative", action="store_true",
                        help="the engine without drafting (a baseline: ratios near 1, the same texts)")
    parser.add_argument("--worker", choices=["engine", "python"], help=argparse.SUPPRESS)  # internal
    return parser.parse_args()


def prompts(model_path: Path) -> dict[str, str]:
    from qwen_chat.gguf.files import read_model_info
    from qwen_chat.qwen3.template import ChatTemplate, Turn, build_prompt

    template = ChatTemplate(read_model_info(model_path).chat_template)
    source = EDITED_FILE.read_text(encoding="utf-8")
    return {name: build_prompt(template, [Turn("user", text.replace("{file}", source))], enable_thinking=False)
            for name, (text, _limit) in TASKS.items()}


def python_run(llm, prompt: str, max_tokens: int) -> dict:
    """create_completion(stream=True) from an empty cache; a chunk's time is when its token was sampled."""
    llm.reset()
    times: list[float] = []
    text: list[str] = []
    for chunk in llm.create_completion(prompt=prompt, max_tokens=max_tokens, stream=True, frequency_penalty=0.0,
                                       repeat_penalty=1.0, **SAMPLING):
        choice = chunk["choices"][0]
        if choice["finish_reason"] != "length":  # the last chunk after "length" samples nothing
            times.append(time.perf_counter())
            text.append(choice["text"])
    tg = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return {"tg": tg, "tokens": len(times), "text": "".join(text)}


def engine_run(engine, sink: AppSink, prompt: str, max_tokens: int, run: int, drafting: bool = True) -> dict:
    from qwen_chat.engines.protocol import Done, Failed, GenerateRequest
    from qwen_chat.qwen3.sampling import Sampling

    engine._model.loop.clear()  # the bench reaches in: the whole prompt is evaluated, as on the other side
    engine.generate(GenerateRequest(run, prompt, Sampling(**SAMPLING, max_tokens=max_tokens), drafting=drafting))
    event = sink.wait(timeout=3600)  # a busy machine can make an edit take minutes
    if isinstance(event, Failed):
        raise RuntimeError(event.message)
    assert isinstance(event, Done) and event.drafting is not None
    d = event.drafting
    return {"tg": event.tokens_per_second, "tokens": event.completion_tokens, "text": event.answer,
            "drafted": d.drafted, "accepted": d.accepted, "batches": d.batches}


def serve(side: str, args: argparse.Namespace) -> None:
    """A worker process: load one side, then answer each request line on stdin with a RESULT line."""
    texts = prompts(args.model)
    engine = sink = llm = None
    if side == "engine":
        engine, sink = _load_engine(args)
    else:
        import llama_cpp

        llm = llama_cpp.Llama(str(args.model), n_ctx=N_CTX, n_threads=args.threads, n_threads_batch=args.threads,
                              n_batch=512, verbose=False)
    print("RESULT {}", flush=True)
    for line in sys.stdin:
        ask = json.loads(line)
        prompt, limit = texts[ask["task"]], ask.get("limit") or TASKS[ask["task"]][1]
        if engine is not None:
            result = engine_run(engine, sink, prompt, limit, ask["run"], not args.no_speculative)
        else:
            result = python_run(llm, prompt, limit)
        print("RESULT " + json.dumps(result), flush=True)
    if engine is not None:
        engine.shutdown()
    elif llm is not None:
        llm.close()


def _load_engine(args: argparse.Namespace):
    import logging

    from qwen_chat.engines.llama import Engine
    from qwen_chat.engines.protocol import Failed, LoadRequest

    logging.getLogger("qwen_chat").addHandler(logging.NullHandler())
    logging.getLogger("qwen_chat.llama_cpp").propagate = False
    sink = AppSink()
    engine = Engine(sink).start()
    engine.load(LoadRequest(args.model, n_ctx=N_CTX, n_threads=args.threads, n_threads_batch=args.threads,
                            speculative=not args.no_speculative))
    if isinstance(event := sink.wait(), Failed):
        raise SystemExit(event.message)
    return engine, sink


class Worker:
    def __init__(self, side: str, args: argparse.Namespace) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(args.model), "--worker", side, "--threads", str(args.threads)]
            + (["--no-speculative"] if args.no_speculative else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()

    def _answer(self) -> dict:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise RuntimeError(f"the worker ended (exit code {self.process.wait()})")

    def run(self, task: str, run: int, limit: int = 0) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"task": task, "run": run, "limit": limit}) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


def measure(args: argparse.Namespace, tasks: list[str]) -> dict[str, list[tuple[dict, dict]]]:
    """`args.runs` rounds; in each, every task on both sides, the side that goes first alternating."""
    workers = {side: Worker(side, args) for side in ("python", "engine")}
    results: dict[str, list[tuple[dict, dict]]] = {task: [] for task in tasks}
    try:
        for worker in workers.values():  # warm-up, untimed: a process's first answer pays for page faults
            worker.run(tasks[0], -1, limit=16)
        for run in range(args.runs):
            for name in tasks:
                order = ("python", "engine") if run % 2 == 0 else ("engine", "python")
                got = {side: workers[side].run(name, run) for side in order}
                results[name].append((got["python"], got["engine"]))
                p, e = got["python"], got["engine"]
                print(f"run {run + 1} {name:10} python {p['tg']:6.1f} tok/s ({p['tokens']})  engine {e['tg']:6.1f} "
                      f"tok/s ({e['tokens']}, {e['accepted']}/{e['drafted']} accepted in {e['batches']} batches)  "
                      f"{e['tg'] / p['tg']:.2f}x{'' if p['text'] == e['text'] else '  (texts differ)'}", flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    return results


def report(results: dict[str, list[tuple[dict, dict]]], args: argparse.Namespace) -> None:
    print(f"\nmodel {args.model.name}, {args.threads} threads, {args.runs} alternating runs, temperature "
          f"{SAMPLING['temperature']}, seed {SAMPLING['seed']}")
    summary = []
    for name, pairs in results.items():
        ratios = [e["tg"] / p["tg"] for p, e in pairs if p["tg"] > 0]
        drafted = sum(e["drafted"] for _p, e in pairs)
        accepted = sum(e["accepted"] for _p, e in pairs)
        batches = sum(e["batches"] for _p, e in pairs)
        same = sum(p["text"] == e["text"] for p, e in pairs)
        print(f"{name:10} python {statistics.median(p['tg'] for p, _e in pairs):6.1f} tok/s, engine "
              f"{statistics.median(e['tg'] for _p, e in pairs):6.1f} tok/s, ratio {statistics.median(ratios):.2f}x "
              f"(runs {', '.join(f'{r:.2f}' for r in ratios)}); acceptance "
              f"{accepted / drafted if drafted else 0:.0%} of {drafted} drafted, "
              f"{(accepted + batches) / batches if batches else 0:.2f} tokens/batch in {batches} batches; "
              f"same text {same}/{len(pairs)}")
        summary.append(f"{name} {statistics.median(ratios):.2f}x")
    print("speculative: " + ", ".join(summary))


def main() -> None:
    args = parse_args()
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    if args.worker:
        serve(args.worker, args)
        return
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    report(measure(args, tasks), args)


if __name__ == "__main__":
    main()
