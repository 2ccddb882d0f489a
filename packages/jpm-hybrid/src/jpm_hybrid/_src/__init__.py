"""Private implementation of `jpm_hybrid`: nothing here is public API."""
