"""Round trip of every documented column type: a row written through psycopg equals the event's value.

The contract is the "Values are typed JSON" list of docs/concepts/events.md. One wide table has a column
for each case in ``CASES``. A row is written through psycopg with ordinary parameters, capture runs
in-process (as in ``tests.test_capture``), and the ``created`` event read back from Kafka is
compared column by column, exactly: ``1`` is not ``1.0``, not ``"1"`` and not ``True``, and
``-0.0`` is not ``0.0``. Each case is its own test, so a failure names the type.

The same table then gets a row of NULLs and a few single-column UPDATEs of the wide row, whose
``updateMask`` must name just that column, with ``oldValue`` and ``value`` differing only there.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Json, Jsonb

from cdc.pipeline import run_capture
from models.settings import EntitySettings
from tests.conftest import ROW_PATHS, Servers, _drop_slots
from tests.support import until_streaming
from tests.test_capture import read_topic, settings

TABLE = "type_cases"
ENTITY = EntitySettings(table=TABLE, entity_key="types", entity_path="types/{id}", collection_path="types")


class _PgText:
    """Expected value: what Postgres prints for the column (``SELECT col::text``, TimeZone=UTC)."""

    def __repr__(self) -> str:
        return "PG_TEXT"


class _PgTextElements:
    """Expected value: the list of each element's text form (``unnest(col)::text``, TimeZone=UTC)."""

    def __repr__(self) -> str:
        return "PG_TEXT_ELEMENTS"


PG_TEXT = _PgText()
PG_TEXT_ELEMENTS = _PgTextElements()


@dataclass(frozen=True)
class Case:
    id: str
    sql_type: str  # the column type; the parameter is written as %s::sql_type
    value: Any  # a Python value (adapted by psycopg) or the literal's text
    expected: Any  # the JSON value in the event (after orjson.loads), or PG_TEXT / PG_TEXT_ELEMENTS
    readback: bool = field(default=False)  # also equal to the value psycopg itself reads back

    @property
    def column(self) -> str:
        return f"c_{self.id}"


NESTED_JSON = {
    "name": "walhook", "tags": ["a", "b,c", 'd"e'], "nested": {"deeper": {"list": [1, 2.5, None, True, False]}},
    "unicode": "ünïcödé 日本語 😀", "escapes": "tab\tnewline\nquote\"backslash\\", "big": 9223372036854775807,
    "small": -9223372036854775808, "empty": {}, "none": None,
}
SPECIAL_TEXT = 'quote \' double " backslash \\ newline\n tab\t comma, {brace} [bracket] NULL'
TRICKY_ELEMENTS = ["a,b", 'say "hi"', "{brace}", "back\\slash", " spaced ", "NULL", "null", "", None,
                   "ünï 😀", "new\nline", "semi;colon"]
ALL_BYTES = bytes(range(256))
UUID_TEXT = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
PLUS_TWO = timezone(timedelta(hours=2))
NAN, INF = float("nan"), float("inf")

CASES: list[Case] = [
    # int2/4/8 (and oid): JSON ints
    Case("int2_min", "int2", -32768, -32768, readback=True),
    Case("int2_max", "int2", 32767, 32767, readback=True),
    Case("int4_min", "int4", -2147483648, -2147483648, readback=True),
    Case("int4_max", "int4", 2147483647, 2147483647, readback=True),
    Case("int4_zero", "int4", 0, 0, readback=True),
    Case("int8_min", "int8", -9223372036854775808, -9223372036854775808, readback=True),
    Case("int8_max", "int8", 9223372036854775807, 9223372036854775807, readback=True),
    Case("oid", "oid", "4294967295", 4294967295),
    # numeric: exact strings, as Postgres prints them
    Case("numeric_big", "numeric", Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
    Case("numeric_nan", "numeric", Decimal("NaN"), "NaN"),
    Case("numeric_infinity", "numeric", "Infinity", "Infinity"),
    Case("numeric_scale", "numeric(10,2)", Decimal("1.5"), "1.50"),
    Case("numeric_tiny", "numeric", "-0.000001", "-0.000001"),
    Case("numeric_trailing_zeros", "numeric", "1.50", "1.50"),
    # float4/8: numbers; NaN and +/-Infinity as strings
    Case("float8_max", "float8", 1e308, 1e308, readback=True),
    Case("float8_tenth", "float8", 0.1, 0.1, readback=True),
    Case("float8_negative", "float8", -1.5, -1.5, readback=True),
    Case("float8_denormal", "float8", 5e-324, 5e-324, readback=True),
    Case("float8_zero", "float8", 0.0, 0.0, readback=True),
    Case("float8_whole", "float8", 3.0, 3.0, readback=True),
    Case("float8_nan", "float8", NAN, "NaN"),
    Case("float8_infinity", "float8", INF, "Infinity"),
    Case("float8_minus_infinity", "float8", -INF, "-Infinity"),
    Case("float4_max", "float4", "3.4028235e38", 3.4028235e38, readback=True),
    Case("float4_third", "float4", "0.33333334", 0.33333334, readback=True),
    Case("float4_tenth", "float4", 0.1, 0.1, readback=True),
    Case("float4_nan", "float4", "NaN", "NaN"),
    Case("float4_infinity", "float4", "Infinity", "Infinity"),
    Case("float4_minus_infinity", "float4", "-Infinity", "-Infinity"),
    # bool
    Case("bool_true", "bool", True, True, readback=True),
    Case("bool_false", "bool", False, False, readback=True),
    # text, varchar, char
    Case("text_plain", "text", "hello", "hello", readback=True),
    Case("text_special", "text", SPECIAL_TEXT, SPECIAL_TEXT, readback=True),
    Case("text_unicode", "text", "ünïcödé 日本語 😀 \u200b", "ünïcödé 日本語 😀 \u200b", readback=True),
    Case("text_empty", "text", "", "", readback=True),
    Case("text_null_word", "text", "NULL", "NULL", readback=True),
    Case("varchar", "varchar(20)", "short 😀", "short 😀", readback=True),
    Case("char_padded", "char(5)", "ab", "ab   ", readback=True),
    Case("char_single", '"char"', "x", "x"),
    # uuid: lowercase canonical
    Case("uuid", "uuid", uuid.UUID(UUID_TEXT), UUID_TEXT),
    Case("uuid_upper", "uuid", UUID_TEXT.upper(), UUID_TEXT),
    # json / jsonb: JSON, not a string
    Case("json_object", "json", Json(NESTED_JSON), NESTED_JSON),
    Case("json_array", "json", Json([1, "two", None, {"three": 3.5}]), [1, "two", None, {"three": 3.5}]),
    Case("json_string", "json", Json("just a string"), "just a string"),
    Case("jsonb_nested", "jsonb", Jsonb(NESTED_JSON), NESTED_JSON),
    Case("jsonb_array", "jsonb", Jsonb([[], {}, [1, [2, [3]]]]), [[], {}, [1, [2, [3]]]]),
    Case("jsonb_number", "jsonb", Jsonb(-9223372036854775808), -9223372036854775808),
    # bytea: base64 of the exact bytes
    Case("bytea", "bytea", b"\x00\xff", "AP8="),
    Case("bytea_empty", "bytea", b"", ""),
    Case("bytea_all_bytes", "bytea", ALL_BYTES, base64.b64encode(ALL_BYTES).decode()),
    # date, time, timetz
    Case("date", "date", date(2024, 5, 1), "2024-05-01"),
    Case("date_infinity", "date", "infinity", "infinity"),
    Case("date_minus_infinity", "date", "-infinity", "-infinity"),
    Case("time", "time", time(12, 34, 56, 789000), "12:34:56.789"),
    Case("time_micro", "time", "23:59:59.999999", "23:59:59.999999"),
    Case("timetz", "timetz", "12:34:56+02", PG_TEXT),  # '12:34:56+02'
    Case("timetz_fraction", "timetz", "12:34:56.5-05:30", PG_TEXT),  # '12:34:56.5-05:30'
    # timestamp, timestamptz: ISO 8601; timestamptz in UTC with 'Z'
    Case("timestamp", "timestamp", datetime(2024, 5, 1, 12, 34, 56, 789000), "2024-05-01T12:34:56.789"),
    Case("timestamp_whole", "timestamp", "2024-05-01 00:00:00", "2024-05-01T00:00:00"),
    Case("timestamp_infinity", "timestamp", "infinity", "infinity"),
    Case("timestamp_minus_infinity", "timestamp", "-infinity", "-infinity"),
    Case("timestamptz", "timestamptz", "2024-05-01 12:34:56.789+02", "2024-05-01T10:34:56.789Z"),
    Case("timestamptz_python", "timestamptz", datetime(2024, 5, 1, 12, 34, 56, 789000, tzinfo=PLUS_TWO),
         "2024-05-01T10:34:56.789Z"),
    Case("timestamptz_micro", "timestamptz", "2024-12-31 23:59:59.999999-01", "2025-01-01T00:59:59.999999Z"),
    Case("timestamptz_infinity", "timestamptz", "infinity", "infinity"),
    Case("timestamptz_minus_infinity", "timestamptz", "-infinity", "-infinity"),
    # interval: ISO 8601 duration (IntervalStyle=iso_8601)
    Case("interval", "interval", "1 year 2 mons 3 days 04:05:06", "P1Y2M3DT4H5M6S"),
    Case("interval_python", "interval", timedelta(days=1, seconds=1, microseconds=500000), "P1DT1.5S"),
    Case("interval_zero", "interval", "0", "PT0S"),
    Case("interval_negative", "interval", "-1 day -02:00:00", "P-1DT-2H"),
    # inet / cidr / money: text
    Case("inet_mask", "inet", "192.168.0.1/24", "192.168.0.1/24"),
    Case("inet_host", "inet", "192.168.0.1", "192.168.0.1"),
    Case("inet_v6", "inet", "2001:db8::1/64", "2001:db8::1/64"),
    Case("cidr", "cidr", "10.0.0.0/8", "10.0.0.0/8"),
    Case("cidr_v6", "cidr", "2001:db8::/32", "2001:db8::/32"),
    Case("money", "money", "1234.56", PG_TEXT),  # '$1,234.56' in the C / en_US locales
    Case("money_negative", "money", "-1234.56", PG_TEXT),
    # enums and domains
    Case("enum", "mood", "happy", "happy"),
    Case("enum_tricky_label", "mood", 'say "hi"', 'say "hi"'),
    Case("enum_other_schema", "other.color", "red", "red"),
    Case("domain_int", "posint", 5, 5),
    Case("domain_of_domain", "smallpos", 42, 42),
    Case("domain_text", "label", "a label", "a label"),
    Case("domain_numeric", "price", Decimal("3.5"), "3.50"),
    Case("domain_jsonb", "doc", Jsonb({"a": [1, 2]}), {"a": [1, 2]}),
    Case("domain_timestamptz", "moment", "2024-05-01 12:00:00+02", "2024-05-01T10:00:00Z"),
    Case("domain_over_array", "intlist", [[1, None], [3, 4]], [[1, None], [3, 4]]),
    # types without a converter: their text form
    Case("point", "point", "(1,2)", "(1,2)"),
    Case("tsvector", "tsvector", "a fat cat", "'a' 'cat' 'fat'"),
    Case("int4range", "int4range", "[1,5)", "[1,5)"),
    # arrays: nested lists, NULL elements, multi-dimensional
    Case("int4_array_nulls", "int4[]", [1, None, 3], [1, None, 3]),
    Case("int4_array_2d", "int4[]", [[1, 2], [3, 4]], [[1, 2], [3, 4]]),
    Case("int4_array_3d", "int4[]", [[[1, 2]], [[3, None]]], [[[1, 2]], [[3, None]]]),
    Case("int4_array_empty", "int4[]", [], []),
    Case("int4_array_lower_bound", "int4[]", "[0:2]={1,2,3}", [1, 2, 3]),
    Case("int2_array", "int2[]", [-32768, 32767], [-32768, 32767]),
    Case("int8_array", "int8[]", [-9223372036854775808, 9223372036854775807],
         [-9223372036854775808, 9223372036854775807]),
    Case("text_array", "text[]", TRICKY_ELEMENTS, TRICKY_ELEMENTS, readback=True),
    Case("text_array_2d", "text[]", [["a", None], ["b c", "NULL"]], [["a", None], ["b c", "NULL"]], readback=True),
    Case("varchar_array", "varchar[]", ["x", "y z", ""], ["x", "y z", ""]),
    Case("char_array", "char(3)[]", ["a", "bc"], ["a  ", "bc "]),
    Case("numeric_array", "numeric[]", "{1.50,NaN,NULL,-12345678901234567890.5}",
         ["1.50", "NaN", None, "-12345678901234567890.5"]),
    Case("float8_array", "float8[]", [1.5, NAN, INF, -INF, None, 0.1],
         [1.5, "NaN", "Infinity", "-Infinity", None, 0.1]),
    Case("float4_array", "float4[]", "{0.5,NaN,-Infinity,3.4028235e38}", [0.5, "NaN", "-Infinity", 3.4028235e38]),
    Case("bool_array", "bool[]", [True, False, None], [True, False, None]),
    Case("uuid_array", "uuid[]", [uuid.UUID(UUID_TEXT), None], [UUID_TEXT, None]),
    Case("json_array_of", "json[]", [Json({"a": "b,c"}), Json([1, 2])], [{"a": "b,c"}, [1, 2]]),
    Case("jsonb_array_of", "jsonb[]", [Jsonb({"a": [1, {"b": "c,d"}]}), Jsonb("x y"), Jsonb(3), None],
         [{"a": [1, {"b": "c,d"}]}, "x y", 3, None]),
    Case("bytea_array", "bytea[]", [b"\x00\xff", b"", None], ["AP8=", "", None]),
    Case("date_array", "date[]", "{2024-05-01,infinity,NULL}", ["2024-05-01", "infinity", None]),
    Case("time_array", "time[]", "{12:34:56.789,NULL}", ["12:34:56.789", None]),
    Case("timetz_array", "timetz[]", "{12:34:56+02,12:34:56.5-05:30}", PG_TEXT_ELEMENTS),
    Case("timestamp_array", "timestamp[]", '{"2024-05-01 12:34:56.789",infinity}',
         ["2024-05-01T12:34:56.789", "infinity"]),
    Case("timestamptz_array", "timestamptz[]", '{"2024-05-01 12:34:56.789+02",-infinity,NULL}',
         ["2024-05-01T10:34:56.789Z", "-infinity", None]),
    Case("interval_array", "interval[]", '{"1 year 2 mons 3 days 04:05:06",NULL}', ["P1Y2M3DT4H5M6S", None]),
    Case("inet_array", "inet[]", "{192.168.0.1/24,2001:db8::1,NULL}", ["192.168.0.1/24", "2001:db8::1", None]),
    Case("cidr_array", "cidr[]", "{10.0.0.0/8,2001:db8::/32}", ["10.0.0.0/8", "2001:db8::/32"]),
    Case("money_array", "money[]", "{1234.56,-1}", PG_TEXT_ELEMENTS),
    Case("enum_array", "mood[]", "{happy,sad,NULL}", ["happy", "sad", None]),
    Case("enum_array_tricky", "mood[]", ["very sad", "a,b", 'say "hi"', "NULL", None],
         ["very sad", "a,b", 'say "hi"', "NULL", None]),
    Case("enum_array_2d", "mood[]", "{{happy,sad},{NULL,happy}}", [["happy", "sad"], [None, "happy"]]),
    Case("domain_int_array", "posint[]", "{1,2,NULL}", [1, 2, None]),
    Case("domain_text_array", "label[]", ["x, y", None], ["x, y", None]),
    Case("domain_jsonb_array", "doc[]", [Jsonb({"k": [1]}), None], [{"k": [1]}, None]),
]

TYPES_SQL = """
CREATE TYPE mood AS ENUM ('happy', 'sad', 'very sad', 'a,b', 'say "hi"', 'NULL');
CREATE SCHEMA other;
CREATE TYPE other.color AS ENUM ('red', 'green');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN smallpos AS posint CHECK (VALUE < 100);
CREATE DOMAIN label AS text;
CREATE DOMAIN price AS numeric(10,2);
CREATE DOMAIN intlist AS int4[];
CREATE DOMAIN doc AS jsonb;
CREATE DOMAIN moment AS timestamptz;
"""

# Types created, and columns added, while capture runs: the new Relation message names types
# that did not exist when the capture started.
LATE_TYPES_SQL = """
CREATE TYPE late_mood AS ENUM ('calm', 'tense');
CREATE DOMAIN late_int AS int8;
"""
LATE_CASES: list[Case] = [
    Case("late_enum", "late_mood", "calm", "calm"),
    Case("late_domain_int", "late_int", 9, 9),
    Case("late_enum_array", "late_mood[]", "{calm,NULL,tense}", ["calm", None, "tense"]),
    Case("late_domain_array", "late_int[]", "{1,NULL}", [1, None]),
]

# A value Postgres stores out of line (TOAST): an UPDATE of another column does not resend it.
BIG_TEXT = secrets.token_hex(8000)


@dataclass(frozen=True)
class Update:
    case_id: str
    value: Any
    expected: Any


# One transaction each, in this order, on the wide row (id 1).
UPDATES = [
    Update("numeric_trailing_zeros", "1.5", "1.5"),  # equal as numbers, not as text: exact strings differ
    Update("float8_zero", -0.0, -0.0),
    Update("jsonb_nested", Jsonb({"changed": True}), {"changed": True}),
    Update("timestamptz", "2030-01-01 00:00:00+00", "2030-01-01T00:00:00Z"),
    Update("int4_array_nulls", [None, 2], [None, 2]),
    Update("text_special", None, None),
    Update("bytea", b"\x01", "AQ=="),
    Update("enum", "sad", "sad"),
    Update("domain_int", 7, 7),
]
CASE_BY_ID = {case.id: case for case in CASES}


@dataclass
class Captured:
    created: dict[str, Any]  # data.value.properties of the created event of the wide row
    nulls: dict[str, Any]  # ... of the row of NULLs
    late: dict[str, Any]  # ... of the row written after LATE_CASES' types and columns were added
    updates: list[dict[str, Any]]  # the update events of the wide row, in order
    text_forms: dict[str, Any]  # column -> PG_TEXT / PG_TEXT_ELEMENTS value, read in a UTC session
    readback: dict[str, Any]  # column -> what psycopg reads back


def same(actual: Any, expected: Any) -> bool:
    """Exact JSON equality: types must match (bool / int / float / str), floats compare by repr."""
    if type(actual) is not type(expected):
        return False
    if isinstance(expected, float):
        return repr(actual) == repr(expected)
    if isinstance(expected, list):
        return len(actual) == len(expected) and all(same(a, e) for a, e in zip(actual, expected, strict=True))
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(same(actual[key], expected[key]) for key in expected)
    return bool(actual == expected)


async def _write(dsn: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Insert the wide row and the row of NULLs, read them back, then apply ``UPDATES``."""
    columns = [sql.Identifier(case.column) for case in CASES]
    insert = sql.SQL("INSERT INTO {} (id, big_text, {}) VALUES (1, %s, {})").format(
        sql.Identifier(TABLE), sql.SQL(", ").join(columns),
        sql.SQL(", ").join(sql.SQL(f"%s::{case.sql_type}") for case in CASES))
    text_forms: dict[str, Any] = {}
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(insert, [BIG_TEXT, *(case.value for case in CASES)])
        await conn.execute(sql.SQL("INSERT INTO {} (id) VALUES (2)").format(sql.Identifier(TABLE)))

        await conn.execute("SET TimeZone = 'UTC'")
        cursor = conn.cursor(row_factory=dict_row)
        readback = await (await cursor.execute(sql.SQL("SELECT {} FROM {} WHERE id = 1").format(
            sql.SQL(", ").join(sql.Identifier(case.column) for case in CASES if case.readback),
            sql.Identifier(TABLE)))).fetchone()
        assert readback is not None
        for case in CASES:
            if case.expected is PG_TEXT:
                query = sql.SQL("SELECT {}::text FROM {} WHERE id = 1")
            elif case.expected is PG_TEXT_ELEMENTS:
                query = sql.SQL("SELECT ARRAY(SELECT element::text FROM unnest({}) AS element) FROM {} WHERE id = 1")
            else:
                continue
            query = query.format(sql.Identifier(case.column), sql.Identifier(TABLE))
            row = await (await conn.execute(query)).fetchone()
            assert row is not None
            text_forms[case.column] = row[0]

        for update in UPDATES:
            case = CASE_BY_ID[update.case_id]
            await conn.execute(sql.SQL(f"UPDATE {{}} SET {{}} = %s::{case.sql_type} WHERE id = 1").format(
                sql.Identifier(TABLE), sql.Identifier(case.column)), [update.value])

        await conn.execute("RESET TimeZone")
        await conn.execute(LATE_TYPES_SQL)
        await conn.execute(sql.SQL("ALTER TABLE {} {}").format(sql.Identifier(TABLE), sql.SQL(", ").join(
            sql.SQL(f"ADD COLUMN {{}} {case.sql_type}").format(sql.Identifier(case.column)) for case in LATE_CASES)))
        await conn.execute(sql.SQL("INSERT INTO {} (id, {}) VALUES (3, {})").format(
            sql.Identifier(TABLE), sql.SQL(", ").join(sql.Identifier(case.column) for case in LATE_CASES),
            sql.SQL(", ").join(sql.SQL(f"%s::{case.sql_type}") for case in LATE_CASES)),
            [case.value for case in LATE_CASES])
    return text_forms, readback


@pytest.fixture(scope="module", params=ROW_PATHS)
async def captured(servers: Servers, request: pytest.FixtureRequest) -> AsyncIterator[Captured]:
    """Write the rows through psycopg, capture them in-process, and read the events from Kafka."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(servers.admin_dsn)
    params["dbname"] = name
    dsn = make_conninfo(**params)
    topic = f"walhook.test.{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TYPES_SQL)
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, big_text text, {})").format(
                sql.Identifier(TABLE), sql.SQL(", ").join(
                    sql.SQL(f"{{}} {case.sql_type}").format(sql.Identifier(case.column)) for case in CASES)))
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN big_text SET STORAGE EXTERNAL").format(
                sql.Identifier(TABLE)))
        source, kafka = settings(dsn, servers, topic, request.param)
        stop = asyncio.Event()
        task = asyncio.create_task(run_capture(source, kafka, [ENTITY], stop))
        try:
            await until_streaming(dsn, task, timeout=20)
            text_forms, readback = await _write(dsn)
            events = await read_topic(servers.bootstrap_servers, topic, expected=3 + len(UPDATES))
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        by_row: dict[str, list[dict[str, Any]]] = {"1": [], "2": [], "3": []}
        for event in events:
            by_row[event["entityId"]].append(event)
        assert [event["operationType"] for event in by_row["1"]] == ["created"] + ["updated"] * len(UPDATES)
        assert [event["operationType"] for event in by_row["2"]] == ["created"]
        assert [event["operationType"] for event in by_row["3"]] == ["created"]
        yield Captured(created=by_row["1"][0]["data"]["value"]["properties"],
                       nulls=by_row["2"][0]["data"]["value"]["properties"],
                       late=by_row["3"][0]["data"]["value"]["properties"],
                       updates=by_row["1"][1:], text_forms=text_forms, readback=readback)
    finally:
        with psycopg.connect(servers.admin_dsn, autocommit=True) as conn:
            _drop_slots(conn, name)
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _expected(case: Case, captured: Captured) -> Any:
    if case.expected is PG_TEXT or case.expected is PG_TEXT_ELEMENTS:
        return captured.text_forms[case.column]
    return case.expected


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_value_round_trips(captured: Captured, case: Case) -> None:
    assert case.column in captured.created, f"{case.column} missing from the event"
    actual = captured.created[case.column]
    expected = _expected(case, captured)
    assert same(actual, expected), (f"{case.sql_type} written as {case.value!r}: "
                                    f"event has {actual!r}, expected {expected!r}")
    if case.readback:
        assert same(actual, captured.readback[case.column]), (
            f"{case.sql_type}: event has {actual!r}, psycopg reads {captured.readback[case.column]!r}")


@pytest.mark.parametrize("case", LATE_CASES, ids=[case.id for case in LATE_CASES])
def test_type_created_while_capturing(captured: Captured, case: Case) -> None:
    actual = captured.late.get(case.column, "<missing>")
    assert same(actual, case.expected), (f"{case.sql_type} (created after capture started) written as "
                                         f"{case.value!r}: event has {actual!r}, expected {case.expected!r}")


def test_toasted_text_round_trips(captured: Captured) -> None:
    assert captured.created["big_text"] == BIG_TEXT


def test_null_stays_null(captured: Captured) -> None:
    assert set(captured.nulls) == {"id", "big_text", *(case.column for case in CASES)}
    assert captured.nulls["id"] == 2
    not_null = {name: value for name, value in captured.nulls.items() if name != "id" and value is not None}
    assert not_null == {}


@pytest.mark.parametrize("position", range(len(UPDATES)), ids=[update.case_id for update in UPDATES])
def test_update_of_one_column(captured: Captured, position: int) -> None:
    update = UPDATES[position]
    column = CASE_BY_ID[update.case_id].column
    event = captured.updates[position]
    before = captured.created if position == 0 else captured.updates[position - 1]["data"]["value"]["properties"]
    old = event["data"]["oldValue"]["properties"]
    new = event["data"]["value"]["properties"]

    assert event["data"]["updateMask"] == [column]
    assert same(new[column], update.expected), f"{column}: event has {new[column]!r}, expected {update.expected!r}"
    assert not same(old[column], new[column])
    assert {name for name in old.keys() | new.keys() if not same(old.get(name), new.get(name))} == {column}
    assert same(old, before)  # the old row is exactly the row of the previous event
    assert new["big_text"] == BIG_TEXT  # unchanged TOAST value filled in from the old row
