"""The package version, in one place (the audit log records it with every violation)."""

__version__ = "0.1.0"
