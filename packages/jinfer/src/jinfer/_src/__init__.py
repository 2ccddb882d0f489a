"""Private implementation of `jinfer`: nothing here is public API."""
