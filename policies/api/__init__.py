"""REST API of policies and egress settings, and the data plane's session-context endpoint."""
