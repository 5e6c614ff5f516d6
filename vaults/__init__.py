"""Zero-knowledge vaults and the encrypted credential store (issue 3)."""
