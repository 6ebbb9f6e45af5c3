"""`qwen-chat serve`: the planned model behind an OpenAI-compatible HTTP API."""
