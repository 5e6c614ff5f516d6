"""REST API of connectors."""
