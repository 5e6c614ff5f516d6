"""REST API of the runtime app."""
