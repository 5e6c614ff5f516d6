"""REST API of the vaults app."""
