"""Regression tests, one file per finding of the security review (issue 9)."""
