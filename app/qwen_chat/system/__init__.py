"""The machine: folders, hardware detection, the clipboard, logging."""
