"""Engines that generate: the protocol every engine speaks, llama.cpp in-process, and HTTP (OpenAI-compatible)."""
