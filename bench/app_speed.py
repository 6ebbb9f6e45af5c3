"""Decode speed as the user sees it: the real app in a real terminal (tmux) against plain llama-cpp-python.

For each prompt, in one run and alternating, the app answers it in tmux (typed with send-keys, as a person
would) and plain llama-cpp-python answers the same rendered prompt with the same sampling and output limit in
this process. The app's figure is the decode speed it stores for the answer (streamed tokens after the first
over the time they took); the reference's is measured the same way. While the app answers, a monitor inside
it records the UI thread's CPU time and the longest time its event loop was blocked (the longest frame).

The long-thinking case replays 30,000 tokens of scripted thinking into the app as fast as the UI takes them,
then decodes with the real model (its tokens' text replaced by more scripted thinking), so the timed part runs
with a 30,000-token thinking block already on screen; its reference is the same decode loop without the app.

Usage: python bench/app_speed.py [MODEL.gguf] [--tokens N] [--runs N] [--cases prose,list,code,table,thinking]
Needs tmux. Prints one line per run and a table of medians with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

PROMPTS = {
    "prose": "Write a long story about a dragon who learns to bake bread. Use plain paragraphs.",
    "list": "List 200 fruits, one per line, as a numbered Markdown list.",
    "code": "Write a long Python module with many small functions for string utilities, in one fenced code block.",
    "table": "Make a Markdown table of 100 countries with columns: number, country, capital, continent.",
    "thinking": "Think step by step for a long time, then answer: what is 17 times 23?",
}
SESSION = "qwen-chat-bench"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", type=Path)
    parser.add_argument("--tokens", type=int, default=400, help="output limit of every answer")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cases", default=",".join(PROMPTS))
    parser.add_argument("--prefill", type=int, default=30000, help="scripted thinking tokens before the timed part")
    parser.add_argument("--size", default="170x45", help="terminal columns x rows")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)  # the app side, in tmux
    parser.add_argument("--stats", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--replay", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from real_model import real_model_path

        args.model = real_model_path()
    if args.inside:
        from app_speed_inside import run_app

        run_app(args.model, args.stats, args.replay, args.prefill)
        return
    if shutil.which("tmux") is None:
        sys.exit("bench/app_speed.py needs tmux (apt-get install tmux)")
    cases = [c for c in args.cases.split(",") if c]
    results = run_all(args, cases)
    report(results, args)


def run_all(args: argparse.Namespace, cases: list[str]) -> dict[str, dict[str, list[float]]]:
    from app_speed_reference import Reference

    work = Path(tempfile.mkdtemp(prefix="qwen-chat-bench-"))
    env = _environment(work, args.tokens)
    os.environ.update(env)  # the reference reads the same settings (sampling presets, output limit)
    reference = Reference(args.model)
    results: dict[str, dict[str, list[float]]] = {c: {"app": [], "ref": [], "cpu": [], "frame": [], "frame_cpu": []}
                                                  for c in cases}
    # a session that keeps the tmux server up between the app's windows (it exits with its last session)
    subprocess.run(["tmux", "new-session", "-d", "-s", f"{SESSION}-keep", "sleep 3600"], check=True)
    try:
        for replay in (False, True):
            chosen = [c for c in cases if (c == "thinking") == replay]
            if not chosen:
                continue
            app = AppInTmux(args, env, work, replay)
            try:
                for run in range(args.runs):
                    for case in chosen:
                        order = ("app", "ref") if run % 2 == 0 else ("ref", "app")
                        for side in order:
                            if side == "ref":
                                speed = reference.speed(PROMPTS[case], args.tokens, scripted=replay)
                                results[case]["ref"].append(speed)
                            else:
                                stats = app.answer(PROMPTS[case])
                                results[case]["app"].append(stats["tokens_per_second"])
                                results[case]["cpu"].append(stats["ui_cpu_share"])
                                results[case]["frame"].append(stats["longest_frame_ms"])
                                results[case]["frame_cpu"].append(stats["longest_frame_cpu_ms"])
                                results[case].setdefault("frame_at", []).append(stats["longest_frame_after_s"])
                        r = results[case]
                        print(f"run {run + 1} {case:8}: app {r['app'][-1]:6.1f} tok/s, plain llama-cpp-python "
                              f"{r['ref'][-1]:6.1f} tok/s, UI thread {r['cpu'][-1]:5.1%} of a core, longest frame "
                              f"{r['frame'][-1]:5.1f} ms ({r['frame_at'][-1]:.1f} s into the answer, UI CPU in it "
                              f"{r['frame_cpu'][-1]:.1f} ms)", flush=True)
            finally:
                app.close()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", f"={SESSION}-keep"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return results


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    print(f"\nmodel {args.model.name}, {args.tokens} tokens per answer, {args.runs} alternating runs, terminal "
          f"{args.size} (tmux); medians")
    print("| case | app (TUI) tok/s | plain llama-cpp-python tok/s | ratio | UI thread, share of a core | "
          "longest frame | UI CPU in that frame |")
    print("|---|---|---|---|---|---|---|")
    for case, r in results.items():
        if not r["app"]:
            continue
        app, ref = statistics.median(r["app"]), statistics.median(r["ref"])
        worst = max(range(len(r["frame"])), key=r["frame"].__getitem__)
        print(f"| {case} | {app:.1f} | {ref:.1f} | {app / ref:.3f} | {statistics.median(r['cpu']):.1%} | "
              f"{r['frame'][worst]:.1f} ms | {r['frame_cpu'][worst]:.1f} ms |")


def _environment(work: Path, tokens: int) -> dict[str, str]:
    config = work / "config"
    config.mkdir(parents=True)
    presets = ("hybrid-thinking", "hybrid-non-thinking", "thinking-2507", "instruct-2507")
    (config / "settings.toml").write_text("".join(f'[overrides.{p}]\nmax_output = {tokens}\n\n' for p in presets))
    return {"QWEN_CHAT_DATA_DIR": str(work / "data"), "QWEN_CHAT_CONFIG_DIR": str(config),
            "QWEN_CHAT_DB": str(work / "data" / "bench.db"), "TEXTUAL_DISABLE_KITTY_KEY": "1"}


class AppInTmux:
    """qwen-chat running in a tmux window of its own, typed into with send-keys."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], work: Path, replay: bool) -> None:
        self.stats = work / ("stats-replay.jsonl" if replay else "stats.jsonl")
        self.db = Path(env["QWEN_CHAT_DB"])
        self.answers = 0
        columns, rows = args.size.split("x")
        command = [sys.executable, str(Path(__file__).resolve()), str(args.model), "--inside", "--stats",
                   str(self.stats), "--prefill", str(args.prefill)] + (["--replay"] if replay else [])
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        subprocess.run(["tmux", "kill-session", "-t", f"={SESSION}"], capture_output=True)  # exact name
        subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", columns, "-y", rows,
                        f"env {exports} TERM=xterm-256color {' '.join(command)}"], check=True)
        self._wait(lambda lines: any(line.get("event") == "ready" for line in lines), 300, "the model to load")

    def answer(self, prompt: str) -> dict[str, float]:
        self._keys("C-n")  # a new conversation for every answer: the same context as the reference
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", f"={SESSION}:", "-l", prompt], check=True)
        self._keys("Enter")
        self.answers += 1
        lines = self._wait(lambda ls: sum(1 for line in ls if line.get("event") == "answer") >= self.answers,
                           900, "the answer")
        stats = [line for line in lines if line.get("event") == "answer"][self.answers - 1]
        with sqlite3.connect(self.db) as db:
            (speed,) = db.execute("SELECT tokens_per_second FROM messages WHERE id = ?",
                                  (stats["message_id"],)).fetchone()
        stats["tokens_per_second"] = speed or stats.get("replay_tokens_per_second", 0.0)
        return stats

    def close(self) -> None:
        self._keys("C-q")
        time.sleep(1)
        subprocess.run(["tmux", "kill-session", "-t", f"={SESSION}"], capture_output=True)  # exact name

    def _keys(self, key: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", f"={SESSION}:", key], check=True)

    def _wait(self, done, timeout: float, what: str) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [json.loads(x) for x in self.stats.read_text().splitlines()] if self.stats.exists() else []
            if done(lines):
                return lines
            time.sleep(0.2)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", f"={SESSION}:"], capture_output=True, text=True)
        raise SystemExit(f"timed out waiting for {what}; the screen shows:\n{screen.stdout}")


if __name__ == "__main__":
    main()
