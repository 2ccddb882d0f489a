"""Private implementation of `jlens`: nothing here is public API."""
