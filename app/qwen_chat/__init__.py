"""qwen-chat: chat with the Qwen3 model family locally, in the terminal."""

__version__ = "0.1.0"
