"""Keyring of master keys, per-tenant data keys and AEAD sealing. Knows nothing of storage."""
