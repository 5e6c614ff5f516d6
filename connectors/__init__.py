"""Connector packages: specs, matcher, shims and the actions manifest (issue 4)."""
