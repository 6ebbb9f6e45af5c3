"""Tools the model may call: MCP servers, their connections, and the rules that allow a call."""
