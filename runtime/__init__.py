"""Runtime: the processes of `aileron service` and their health (agent sessions and sandboxes join later)."""
