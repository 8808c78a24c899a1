"""Indexes for the contacts list at 1 M contacts (bench/contacts_bench.py): the prefix
searches, the attribute and subscription filters, and "in journey X at step Y".

PostgreSQL only, in SQL: operator classes (text_pattern_ops, jsonb_path_ops) and GIN have
no SQLite form, and SQLite is the development database of small data. They are not in the
models' Meta, so the migration state does not know them; this migration removes them.

Built CONCURRENTLY, outside a transaction: on a live table of a million contacts a plain
CREATE INDEX would hold every write to the contacts (and the enrollments) until it is done.
A concurrent build that fails leaves an invalid index behind; running the migration again
drops it and builds it anew."""

from django.db import migrations

INDEXES = {
    # UPPER(col::text) LIKE UPPER('q%') is what Django writes for istartswith; the expression
    # must be the same for the planner to use the index, and text_pattern_ops lets LIKE use
    # a btree whatever the database's collation.
    "contact_email_prefix_idx": "journeys_contact (UPPER(email::text) text_pattern_ops)",
    "contact_external_id_prefix_idx": (
        "journeys_contact (UPPER(external_id::text) text_pattern_ops)"
    ),
    "contact_first_name_prefix_idx": (
        "journeys_contact (UPPER((attributes ->> 'first_name')::text) text_pattern_ops)"
    ),
    "contact_last_name_prefix_idx": (
        "journeys_contact (UPPER((attributes ->> 'last_name')::text) text_pattern_ops)"
    ),
    "contact_name_prefix_idx": (
        "journeys_contact (UPPER((attributes ->> 'name')::text) text_pattern_ops)"
    ),
    # attributes @> '{"plan": "pro"}'
    "contact_attributes_gin_idx": "journeys_contact USING gin (attributes jsonb_path_ops)",
    # (subscriptions -> 'email') = '"bounced"', newest first
    "contact_email_subscription_idx": "journeys_contact ((subscriptions -> 'email'), id)",
    "contact_sms_subscription_idx": "journeys_contact ((subscriptions -> 'sms'), id)",
    # Who is at a step now: the contacts list's journey/step filter and the canvas numbers.
    "enrollment_active_step_idx": (
        "journeys_enrollment (journey_id, current_step, version_id, contact_id) "
        "WHERE state = 'active'"
    ),
}


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE c.relname = ANY(%s) AND NOT i.indisvalid",
            [list(INDEXES)],
        )
        invalid = [name for (name,) in cursor.fetchall()]
    for name in invalid:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    for name, target in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {target}")


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("journeys", "0019_journey_lifecycle"),
    ]

    operations = [migrations.RunPython(create_indexes, drop_indexes)]
