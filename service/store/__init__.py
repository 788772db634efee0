"""Postgres access with asyncpg. Sees sealed bytes only, never a plaintext value."""
