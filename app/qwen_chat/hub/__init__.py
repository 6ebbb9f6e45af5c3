"""Hugging Face: listings, resumable verified downloads, the download queue, and what `--model` names."""
