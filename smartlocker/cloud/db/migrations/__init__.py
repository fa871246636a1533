"""SQL migration files, applied in name order by :mod:`smartlocker.cloud.db.migrate`."""
