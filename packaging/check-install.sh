#!/usr/bin/env bash
# CI's install check: build the wheel and sdist, install the wheel with pipx into a throwaway PIPX_HOME, and
# run what a new user runs: --version, doctor, and a one-shot answer from the real test model.
# Usage: packaging/check-install.sh PYTHON MODEL.gguf   (PYTHON: a venv with the test extras: build, pipx)
set -euo pipefail
python=$1
model=$2
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m build --no-isolation --outdir "$work/dist" "$top" >/dev/null
ls "$work/dist"/qwen_chat-*.whl "$work/dist"/qwen_chat-*.tar.gz >/dev/null
export PIPX_HOME="$work/pipx" PIPX_BIN_DIR="$work/bin" QWEN_CHAT_DATA_DIR="$work/data" QWEN_CHAT_CONFIG_DIR="$work/config"
"$python" -m pipx install "$work"/dist/qwen_chat-*.whl >/dev/null
"$work/bin/qwen-chat" --version
"$work/bin/qwen-chat" doctor
# </dev/null: ask adds text piped into stdin to the question, and this script's stdin may be a pipe
answer=$("$work/bin/qwen-chat" --model "$model" ask "Reply with just the word: hello" </dev/null)
echo "answer: $answer"
grep -qi hello <<<"$answer"
# the wheel carries the catalog and themes (a pipx install has no checkout)
"$work/bin/qwen-chat" models | grep -q "qwen3-235b-a22b"  # grep -q leaves early: models must exit 0 all the same
# a conversation made by this install survives reinstalling from the sdist (what pipx upgrade does)
app_python="$PIPX_HOME/venvs/qwen-chat/bin/python"
"$app_python" -c "from qwen_chat.store.database import Store; from qwen_chat.system.paths import database_path
s = Store(database_path()); c = s.create_conversation(title='kept across upgrade'); s.add_user_message(c.id, 'hi')"
"$python" -m pipx install --force "$work"/dist/qwen_chat-*.tar.gz >/dev/null
"$work/bin/qwen-chat" --version
"$app_python" -c "from qwen_chat.store.database import Store; from qwen_chat.system.paths import database_path
assert [c.title for c in Store(database_path()).conversations()] == ['kept across upgrade']"
echo "install check passed"
