"""The models: the catalog, memory planning, GGUF files (read, split, merge), the hub and downloads."""
