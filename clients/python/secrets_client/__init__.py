"""Client library for the workflow secrets service."""
