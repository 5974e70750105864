"""Alembic revision scripts of the audit log, in order (0001, 0002, ...)."""
