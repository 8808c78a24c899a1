"""`field__any=[...]`: membership in a list of values as one array parameter.

On PostgreSQL `pk__any=ids` compiles to `id = ANY(%s)` with the list as a single array
parameter, where `pk__in=ids` writes one placeholder per value: for the engine's batches of
500 ids, Django compiling and psycopg rewriting those placeholders cost more Python than the
query takes in the database. Other databases get the ordinary `IN (...)`.
"""

from django.db.models import Field, ForeignObject, Lookup
from django.db.models.lookups import In

from journeys.pgarray import array_literal


@ForeignObject.register_lookup
@Field.register_lookup
class AnyOf(Lookup):
    lookup_name = "any"
    # The right-hand side is a list of plain values (ids), adapted by the driver.
    prepare_rhs = False

    def get_prep_lookup(self):
        values = list(self.rhs)
        if set(map(type, values)) - {int, str}:
            raise TypeError(f"__any takes a list of ids or strings, not {self.rhs!r}")
        return values

    def as_sql(self, compiler, connection):
        if connection.vendor != "postgresql" or not self.rhs:
            return compiler.compile(In(self.lhs, self.rhs))
        lhs, lhs_params = self.process_lhs(compiler, connection)
        db_type = self.lhs.output_field.db_type(connection)
        return f"{lhs} = ANY(%s::{db_type}[])", [*lhs_params, array_literal(self.rhs)]
