"""Conversations on disk: the SQLite store and export."""
