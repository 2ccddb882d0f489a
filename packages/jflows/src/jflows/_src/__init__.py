"""Private implementation of `jflows`: nothing here is public API."""
