"""Private implementation of `jscore`: nothing here is public API."""
