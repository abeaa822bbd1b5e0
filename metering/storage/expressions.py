"""ORM expressions whose SQL differs by database; Django picks the ``as_<vendor>``."""

from django.db import NotSupportedError
from django.db.models import F, Func, TextField

from metering.storage.portable import SQLITE_FUNCTION
from metering.storage.postgres import property_text_sql


class PropertyText(Func):
    """The text of an event property, as filters compare it; NULL when it has none."""

    output_field = TextField()

    def __init__(self, key: str, column: str = "properties"):
        self.key = key
        super().__init__(F(column))

    def as_postgresql(self, compiler, connection, **extra_context):
        column, params = compiler.compile(self.source_expressions[0])
        sql, _ = property_text_sql(column, self.key)
        return sql, (*params, self.key, *params, self.key)  # the column appears twice

    def as_sqlite(self, compiler, connection, **extra_context):
        column, params = compiler.compile(self.source_expressions[0])
        return f"{SQLITE_FUNCTION}({column}, %s)", (*params, self.key)

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError("PropertyText is implemented for PostgreSQL and SQLite only")
