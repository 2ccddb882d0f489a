"""Private implementation of `jpm_core`: nothing here is public API."""
