"""The user's settings: settings.toml read once into typed values, and written back with its comments kept."""
