"""Database access: connections, the schema migrations, and the storage edition."""

from .edition import Edition, detect_edition, report_edition
from .migrate import Migration, available_migrations, migrate

__all__ = [
    "Edition",
    "Migration",
    "available_migrations",
    "detect_edition",
    "migrate",
    "report_edition",
]
