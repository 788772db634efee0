"""Workflow secrets service: seals secrets in Postgres, resolves {{KEY}} references at run time."""
