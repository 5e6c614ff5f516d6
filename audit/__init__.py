"""Action-attributed audit log (arrives with the data plane)."""
