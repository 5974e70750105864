"""The audit log's Alembic migrations, shipped inside the package as tosengine.migrations."""
