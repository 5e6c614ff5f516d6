"""Human approvals of held actions (issue 6)."""
