"""End-to-end tests that cross processes, and the shared test plumbing."""
