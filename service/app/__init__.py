"""Use cases: each one reads and writes through the store, seals and opens through crypto, and
leaves every decision to the pure domain layer."""
