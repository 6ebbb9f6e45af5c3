"""GGUF files: the header, split sets, merging them, and the KV cache's ggml types."""
