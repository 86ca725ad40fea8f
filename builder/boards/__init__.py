"""Board files: one TOML file per board (see docs/boards.md)."""
