"""Django's PostgreSQL backend, emptying tables faster between tests.

A transactional test (django_db(transaction=True)) ends with a flush, which
on PostgreSQL is one TRUNCATE of every table: about a quarter of a second for
the catalog's tables, as it gives each table and index new files, and the
suite ends several hundred tests that way. The few rows a test leaves are
gone as surely with DELETE, in about a tenth of that; Django's foreign keys
are deferred, so the order does not matter within the flush's transaction.
Tables with triggers of their own (the audit trail refuses DELETE) are still
truncated, as TRUNCATE fires no row trigger; a flush that resets sequences
keeps Django's own statements."""

from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        if reset_sequences or allow_cascade or not tables:
            return super().sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal")
            guarded = {name.strip('"') for (name,) in cursor.fetchall()}
        truncated = [table for table in tables if table in guarded]
        statements = [f"DELETE FROM {self.quote_name(table)};" for table in tables if table not in guarded]
        if truncated:
            statements.append(f"TRUNCATE {', '.join(self.quote_name(table) for table in truncated)};")
        return statements


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
