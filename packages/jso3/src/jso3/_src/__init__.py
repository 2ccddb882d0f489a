"""Private implementation of `jso3`: nothing here is public API."""
