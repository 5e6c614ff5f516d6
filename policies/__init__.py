"""Org and team policies (Cedar), egress settings, and the data plane's session context."""
