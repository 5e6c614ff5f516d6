"""A faster bulk INSERT for the audit tables, which take hundreds of rows per ingest batch."""

from __future__ import annotations

from typing import Any

from django.db import connections, models, router


def insert_many(model: type[models.Model], rows: list[Any]) -> None:
    """bulk_create's INSERT, prepared once for the batch and run for each row.

    Django compiles its INSERT anew for every field of every row: that was a quarter of the API's time ingesting
    500-record batches (py-spy). The values are prepared exactly as bulk_create prepares them (each field's
    pre_save, then get_db_prep_save), from a model instance or any object with the fields as attributes. An
    auto-incremented primary key is left to the database.
    """
    if not rows:
        return
    connection = connections[router.db_for_write(model)]
    fields = [f for f in model._meta.concrete_fields if not isinstance(f, models.AutoField | models.BigAutoField)]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    # Names from the model, quoted by the backend; every value is a parameter.
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"  # noqa: S608
    params = [[f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields] for row in rows]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def update_many(model: type[models.Model], changes: dict[Any, dict[str, Any]], *, chunk: int = 1000) -> None:
    """Set each row's own values (by primary key) in one statement per set of columns, not one per row.

    `WITH v(pk, a, b) AS (VALUES ...) UPDATE t SET a = v.a, b = v.b FROM v WHERE t.pk = v.pk`, which SQLite
    (3.33+) and PostgreSQL both run; on PostgreSQL each value is cast to its column's type, as VALUES would
    otherwise take parameters for text. One UPDATE per row was most of an outcome batch's time on PostgreSQL
    (a round trip each); Django's bulk_update (CASE per column) was slower still on SQLite.
    """
    by_columns: dict[tuple[str, ...], list[tuple[Any, dict[str, Any]]]] = {}
    for pk, values in changes.items():
        by_columns.setdefault(tuple(sorted(values)), []).append((pk, values))
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    pk_field = model._meta.pk
    assert pk_field is not None  # noqa: S101 - every model has one
    for names, rows in by_columns.items():
        fields = [pk_field, *(model._meta.get_field(name) for name in names)]
        assert all(isinstance(f, models.Field) for f in fields)  # noqa: S101 - concrete columns only
        concrete = [f for f in fields if isinstance(f, models.Field)]
        cast = connection.vendor == "postgresql"
        holder = ", ".join(f"CAST(%s AS {f.db_type(connection)})" if cast else "%s" for f in concrete)
        aliases = [f"c{i}" for i in range(len(concrete))]
        table = quote(model._meta.db_table)
        assignments = ", ".join(
            f"{quote(str(f.column))} = v.{a}" for f, a in zip(concrete[1:], aliases[1:], strict=True)
        )
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            values_sql = ", ".join([f"({holder})"] * len(part))
            # Names from the model, quoted by the backend; every value is a parameter.
            sql = (
                f"WITH v({', '.join(aliases)}) AS (VALUES {values_sql}) "  # noqa: S608
                f"UPDATE {table} SET {assignments} FROM v WHERE {table}.{quote(str(pk_field.column))} = v.c0"
            )
            params: list[Any] = []
            for pk, values in part:
                params.append(pk_field.get_db_prep_save(pk, connection))
                params.extend(f.get_db_prep_save(values[f.name], connection) for f in concrete[1:])
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
