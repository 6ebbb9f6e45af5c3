"""The command line: argument parsing, the one-shot commands (ask, pull, doctor, history) and the start of the TUI."""
