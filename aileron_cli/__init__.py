"""The `aileron` command: a thin client of the REST API, plus `aileron service` which runs the runtime."""
