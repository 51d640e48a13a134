"""Storage: SQLAlchemy 2 (Core) tables, Alembic migrations, unit of work, repositories."""
