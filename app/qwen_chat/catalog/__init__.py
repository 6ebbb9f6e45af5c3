"""The model catalog (`models_catalog.yaml`): the Qwen3 GGUF family, its quants and sampling presets."""
