"""Tenants: organizations, teams, projects, users, memberships, roles and API tokens."""
