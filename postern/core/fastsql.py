"""Hand-written SQL for the few statements every request runs.

Why: on the 2-core machines we measure on, peewee spends ~0.5-0.8 ms of CPU building
one SELECT and ~40 µs turning each row into a model instance, while SQLite runs the
statement itself in a fraction of that. Authentication, the inbox lookup, the message
listing, ``wait_for_email`` and the audit row run on every request, so these few
statements are written once here and compiled once per database (placeholder style);
rows come back as ordinary model instances, so callers and serialisers do not change.
Everything else keeps using peewee's query builder.

SQL fragments passed in (``tail``) use ``?`` for parameters and name columns as the
migrations do; they must not contain ``?`` anywhere else.
"""

from __future__ import annotations

import datetime as dt

import peewee

from postern.core.db import database

# Field types whose Python value differs from what the driver returns.
_CONVERTED = (peewee.DateTimeField, peewee.BooleanField, peewee.BlobField, peewee.DecimalField)


class _Compiled:
    __slots__ = ("sql", "names", "converters")

    def __init__(self, sql: str, names: tuple[str, ...], converters: tuple):
        self.sql, self.names, self.converters = sql, names, converters


# Keyed by the driver's parameter mark, never by id(database): a closed database object's
# id can be reused by the next one (a SQLite mock world, then PostgreSQL in one process),
# which once handed PostgreSQL a statement compiled with SQLite's "?" marks.
_cache: dict[tuple, _Compiled] = {}


def _quote(name: str) -> str:
    return f'"{name}"'


def _compile(model, fields, tail: str) -> _Compiled:
    db = database.obj
    key = (db.param, model, fields, tail)
    compiled = _cache.get(key)
    if compiled is None:
        columns = ", ".join(_quote(f.column_name) for f in fields)
        sql = f"SELECT {columns} FROM {_quote(model._meta.table_name)} {tail}".replace("?", db.param)
        converters = tuple((i, _converter(f)) for i, f in enumerate(fields) if isinstance(f, _CONVERTED))
        compiled = _cache[key] = _Compiled(sql, tuple(f.name for f in fields), converters)
    return compiled


def _datetime(value):
    """A stored datetime: SQLite hands back peewee's text ("2026-12-07 15:17:40.123456"),
    PostgreSQL a datetime. ``fromisoformat`` reads that text at a fifth of the cost of
    peewee's general parser, which a page of 50 messages ran 100 times."""
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return peewee.format_date_time(value, peewee.DateTimeField.formats)


def _converter(field):
    return _datetime if type(field) is peewee.DateTimeField else field.python_value


def _instance(model, names, row, converters):
    """A model instance as peewee's own cursor wrapper makes one, minus the per-field setattr."""
    if converters:
        row = list(row)
        for i, convert in converters:
            row[i] = convert(row[i])
    obj = model.__new__(model)
    obj.__data__ = dict(zip(names, row, strict=True))
    obj._dirty = set()
    obj.__rel__ = {}
    return obj


def select(model, fields: tuple, tail: str, params: tuple | list = ()) -> list:
    """``SELECT fields FROM model's table <tail>`` as a list of ``model`` instances
    holding only ``fields`` (like ``model.select(*fields)``)."""
    compiled = _compile(model, fields, tail)
    cursor = database.execute_sql(compiled.sql, params)
    names, converters = compiled.names, compiled.converters
    return [_instance(model, names, row, converters) for row in cursor.fetchall()]


#: Parts per ``select_each`` statement. A fixed shape: each number of parts would be a
#: statement of its own in every connection's cache of prepared statements, and a
#: compound of many parts is a large one (a statement per batch size cost a worker
#: ~8 KiB per parked wait, bench/wait_latency.py --inboxes 100).
EACH_PARTS = 8


def select_each(model, fields: tuple, tail: str, params_each: list, order: str, nothing: tuple) -> list[list]:
    """``select`` once per parameter list, ``EACH_PARTS`` lists per statement: a ``UNION
    ALL`` of the statement per list, each keeping its own ``LIMIT``. ``nothing`` is a
    parameter list that selects no row, filling the last statement's unused parts.
    Returns one list of instances per parameter list, each ordered by the column
    ``order`` (which ``tail`` orders by too). For the reads of many inboxes woken
    together (core/readbatch.py): a few statements instead of one per list."""
    if len(params_each) == 1:
        return [select(model, fields, tail, params_each[0])]
    key = (database.obj.param, model, fields, tail, order, "each")
    compiled = _cache.get(key)
    if compiled is None:
        one = _compile(model, fields, tail)
        # Each part in a subquery (a member of a compound SELECT cannot have its own
        # ORDER BY or LIMIT), numbered by a literal that says whose row it is.
        columns = one.sql[len("SELECT ") :]
        parts = [f"SELECT * FROM (SELECT {i} AS postern_part, {columns}) AS part{i}" for i in range(EACH_PARTS)]
        sql = f"{' UNION ALL '.join(parts)} ORDER BY postern_part, {_quote(order)}"
        compiled = _cache[key] = _Compiled(sql, one.names, one.converters)
    results: list[list] = [[] for _ in params_each]
    names, converters = compiled.names, compiled.converters
    for start in range(0, len(params_each), EACH_PARTS):
        chunk = list(params_each[start : start + EACH_PARTS])
        chunk += [nothing] * (EACH_PARTS - len(chunk))
        cursor = database.execute_sql(compiled.sql, [value for params in chunk for value in params])
        for row in cursor.fetchall():
            results[start + row[0]].append(_instance(model, names, row[1:], converters))
    return results


def select_one(model, fields: tuple, tail: str, params: tuple | list = ()):
    rows = select(model, fields, tail, params)
    return rows[0] if rows else None


def all_fields(model, *, without: tuple[str, ...] = ()) -> tuple:
    return tuple(f for f in model._meta.sorted_fields if f.name not in without)


def instance(model, values: dict):
    """A model instance holding ``values`` (field name -> Python value), as if loaded."""
    return _instance(model, tuple(values), tuple(values.values()), ())


def insert(model, values: dict):
    """``INSERT`` one row and return it as a model instance, like ``model.create``:
    fields missing from ``values`` take the model's defaults, and every value goes
    through its field's ``db_value``."""
    fields = model._meta.fields
    missing = model._meta.get_default_dict().items()
    values = {**{k: v for k, v in missing if k not in values}, **values}
    names = tuple(values)
    key = (database.obj.param, model, names, "insert")
    compiled = _cache.get(key)
    if compiled is None:
        columns = ", ".join(_quote(fields[n].column_name) for n in names)
        marks = ", ".join([database.obj.param] * len(names))
        sql = f"INSERT INTO {_quote(model._meta.table_name)} ({columns}) VALUES ({marks})"
        compiled = _cache[key] = _Compiled(sql, names, ())
    database.execute_sql(compiled.sql, [fields[n].db_value(values[n]) for n in names])
    return instance(model, values)


def execute(sql: str, params: tuple | list = ()):
    """Run a hand-written statement (``?`` placeholders); returns the cursor."""
    key = (database.obj.param, sql)
    compiled = _cache.get(key)
    if compiled is None:
        compiled = _cache[key] = _Compiled(sql.replace("?", database.obj.param), (), ())
    return database.execute_sql(compiled.sql, params)
