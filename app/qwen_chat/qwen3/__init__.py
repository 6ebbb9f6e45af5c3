"""What is particular to Qwen3: the chat template, thinking, sampling presets and context (YaRN) presets."""
