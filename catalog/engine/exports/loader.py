"""Loading an export archive into PostgreSQL: ExportLoader reads the archive
as a stream, creates each table, loads its rows and checks every member
against the manifest; load_export runs it in one transaction."""

import hashlib
import json
import logging
import re
import tarfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import IO, Any, Generic, TypeVar

import psycopg
from psycopg import sql

from catalog.engine.dumpers import CHUNK_SIZE, connect, normalize_conninfo, one
from catalog.engine.errors import CorruptionError, EngineError
from catalog.engine.exports.archive import MANIFEST_MEMBER, SESSION, Column, Description, ExportManifest
from catalog.engine.exports.schema import query_error
from catalog.engine.exports.sqltext import is_balanced_expression, parse_constant
from catalog.engine.exports.values import LITERAL, insert_statements

logger = logging.getLogger(__name__)

ConnT = TypeVar("ConnT")
# {"schema.table": rows loaded}
Loaded = dict[str, int]

# Rows per batch when loading JSON Lines (staged in a temporary table) or
# SQL statements (sent together), and a cap on the bytes held for SQL.
LOAD_BATCH_ROWS = 50_000
LOAD_BATCH_BYTES = 4 << 20


class HashingReader:
    """Reads a member sequentially, hashing and counting every byte."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self.fileobj = fileobj
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = CHUNK_SIZE) -> bytes:
        data = self.fileobj.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def lines(self) -> Iterator[bytes]:
        """The member's lines without their line breaks. Pieces of a line
        longer than a chunk are joined once, not re-copied chunk by chunk."""
        parts: list[bytes] = []
        while data := self.read():
            pieces = data.split(b"\n")
            if len(pieces) == 1:
                parts.append(data)
                continue
            parts.append(pieces[0])
            yield b"".join(parts)
            yield from pieces[1:-1]
            parts = [pieces[-1]]
        tail = b"".join(parts)
        if tail:
            yield tail

    def drain(self) -> None:
        while self.read():
            pass


class ArchiveLoader(Generic[ConnT]):
    """Reads an export archive as a stream and checks it against its
    manifest; each table it loads goes to `conn` through the subclass's
    _table_exists, _create_table and _load (ExportLoader: PostgreSQL;
    sqlite_loader.SqliteExportLoader: a SQLite file). With wanted=[] it loads
    nothing: it only checks."""

    # What a member that fails to load raises: the reading goes on, so that
    # the manifest can tell damage from a real failure.
    load_errors: tuple[type[Exception], ...] = ()

    def __init__(self, conn: ConnT, params: Mapping[str, Any], wanted: Collection[str] | None) -> None:
        self.conn = conn
        self.params = params
        self.wanted = wanted
        self.seen: dict[str, dict[str, Any]] = {}  # qualified name → what this reading found
        self.loaded: Loaded = {}
        self.load_error: str | None = None
        self.manifest: ExportManifest | None = None
        self.pending: Description | None = None  # the description waiting for its data member

    def run(self, fileobj: IO[bytes]) -> Loaded:
        try:
            with tarfile.open(fileobj=fileobj, mode="r|", encoding="utf-8") as archive:
                for member in archive:
                    self._member(archive, member)
        except tarfile.TarError as exc:
            raise CorruptionError(f"The export is not a readable tar archive: {exc}") from exc
        except EOFError as exc:
            raise CorruptionError("The export ends in the middle of a member: it is truncated") from exc
        self._check_manifest()
        if self.load_error:
            raise EngineError(self.load_error)
        if self.wanted is not None:
            missing = sorted(set(self.wanted) - set(self.seen))
            if missing:
                raise EngineError(f"The export has no table {', '.join(missing)}")
        return self.loaded

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if self.manifest is not None:
            raise CorruptionError(f"The export has a member {member.name} after its manifest")
        content = archive.extractfile(member) if member.isfile() else None
        if content is None:
            raise CorruptionError(f"The export has an unexpected member {member.name}")
        if member.name == MANIFEST_MEMBER:
            self.manifest = self._json(member.name, content.read())
        elif member.name.startswith("tables/") and member.name.endswith(".columns.json"):
            if self.pending is not None:
                raise CorruptionError(f"The export has no rows for table {self._qualified(self.pending)}")
            self.pending = self._json(member.name, content.read())
            self.pending["_member"] = member.name
            self._prepare(self.pending)
        elif self.pending is not None and member.name.startswith(self.pending["_member"][: -len("columns.json")]):
            self._data(member.name, HashingReader(content))
        else:
            raise CorruptionError(f"The export has an unexpected member {member.name}")

    def _json(self, name: str, data: bytes) -> dict[str, Any]:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise CorruptionError(f"Member {name} of the export is not valid JSON") from exc
        if not isinstance(document, dict):
            raise CorruptionError(f"Member {name} of the export is not a JSON object")
        return document

    def _qualified(self, description: Description) -> str:
        return f"{description.get('schema')}.{description.get('name')}"

    def _selected(self, description: Description) -> bool:
        return self.load_error is None and (self.wanted is None or self._qualified(description) in self.wanted)

    def _prepare(self, description: Description) -> None:
        """Creates the table, unless it is skipped; refuses one that exists."""
        qualified = self._qualified(description)
        self._check_description(qualified, description)
        if not self._selected(description):
            return
        if self._table_exists(description):
            raise EngineError(
                f"Table {qualified} already exists in the target database; an export is loaded only into new tables"
            )
        self._create_table(qualified, description)

    def _check_description(self, qualified: str, description: Description) -> None:
        def text(value: object) -> bool:
            return isinstance(value, str) and value != ""

        columns = description.get("columns")
        well_formed = (
            text(description.get("schema"))
            and text(description.get("name"))
            and isinstance(description.get("where", ""), str)
            and isinstance(columns, list)
            and columns
            # A SQLite column may be declared without a type (""); it then has create_as.
            and all(isinstance(c, dict) and text(c.get("name")) and isinstance(c.get("type"), str) for c in columns)
            and all(isinstance(c.get("create_as", ""), str) and (c["type"] or c.get("create_as")) for c in columns)
            and isinstance(description.get("primary_key", []), list)
            and all(text(name) for name in description.get("primary_key", []))
            and all(well_formed_rules(c) for c in columns)
        )
        if not well_formed:
            raise CorruptionError(f"The export's description of table {qualified} is damaged")

    def _data(self, name: str, reader: HashingReader) -> None:
        description, self.pending = self.pending, None
        assert description is not None, "called for the pending table's data member"
        qualified = self._qualified(description)
        fmt = name.rsplit(".", 1)[-1]
        rows = None
        if self._selected(description):
            try:
                rows = self._load(description, fmt, reader)
            except self.load_errors as exc:
                # Damage shows as a parse error long before the hash can be
                # compared: read on, and let the manifest tell which it was.
                self._abandon(f"Could not load table {qualified}: {self._error_text(exc)}")
        reader.drain()
        self.seen[qualified] = {
            "description": description,
            "member": name,
            "format": fmt,
            "rows": rows,
            "size": reader.size,
            "sha256": reader.digest.hexdigest(),
        }

    def _check_manifest(self) -> None:
        if self.manifest is None:
            raise CorruptionError("The export ends before its manifest: it is truncated or damaged")
        if self.pending is not None:
            raise CorruptionError(f"The export has no rows for table {self._qualified(self.pending)}")
        entries = self.manifest.get("tables")
        if not isinstance(entries, dict) or list(entries) != list(self.seen):
            raise CorruptionError("The export's tables are not the ones its manifest lists")
        for qualified, found in self.seen.items():
            entry = entries[qualified]
            description = found["description"]
            if found["sha256"] != entry.get("sha256") or found["size"] != entry.get("size"):
                raise CorruptionError(
                    f"The rows of table {qualified} do not match the export's manifest (SHA-256 differs)"
                )
            if found["member"] != entry.get("member") or found["format"] != self.manifest.get("format"):
                raise CorruptionError(f"The member for table {qualified} is not the one the manifest names")
            for key in ("columns", "primary_key", "where"):
                if description.get(key) != entry.get(key):
                    raise CorruptionError(
                        f"The description of table {qualified} does not match the export's manifest ({key})"
                    )
            if found["rows"] is not None and found["rows"] != entry.get("rows"):
                raise CorruptionError(
                    f"Table {qualified} loaded {found['rows']} rows "
                    f"where the export's manifest says {entry.get('rows')}"
                )

    def _table_exists(self, description: Description) -> bool:
        raise NotImplementedError

    def _create_table(self, qualified: str, description: Description) -> None:
        raise NotImplementedError

    def _load(self, description: Description, fmt: str, reader: HashingReader) -> int:
        raise NotImplementedError

    def _abandon(self, reason: str) -> None:
        """Nothing of this load will be committed; the reading goes on to the manifest."""
        raise NotImplementedError

    def _error_text(self, exc: Exception) -> str:
        raise NotImplementedError


class ExportLoader(ArchiveLoader[psycopg.Connection[Any]]):
    """Loads an export archive into a PostgreSQL connection (one transaction,
    committed by the caller) and checks it against its manifest. With
    wanted=[] it loads nothing: it only checks."""

    # What a member that fails to load raises: the reading goes on, so that
    # the manifest can tell damage from a real failure.
    load_errors: tuple[type[Exception], ...] = (psycopg.Error,)

    def _table_exists(self, description: Description) -> bool:
        return (
            self.conn.execute(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                [description["schema"], description["name"]],
            ).fetchone()
            is not None
        )

    def _create_table(self, qualified: str, description: Description) -> None:
        """CREATE TABLE with each column's type, NOT NULL, constant default
        and generation expression. Identity and the primary key come after
        the rows (_finish_table): the rows then go in as they are, without
        OVERRIDING SYSTEM VALUE, and the key is built once."""
        table = sql.Identifier(description["schema"], description["name"])
        full: list[sql.Composable] = []
        without_generated: list[sql.Composable] = []
        bare: list[sql.Composable] = []
        has_defaults = False
        for column in description["columns"]:
            type_name = column.get("create_as") or column["type"]
            if not self._known_type(type_name):
                # Read on: the manifest tells damage from a type this
                # database lacks (an extension's, say).
                self._abandon(
                    f"Column {column['name']} of {qualified} has a type this database does not know: {type_name[:100]}"
                )
                return
            definition = sql.SQL("{} {}").format(sql.Identifier(column["name"]), sql.SQL(type_name))
            not_null = sql.SQL(" NOT NULL" if column.get("not_null") else "")
            default_text = self._default(qualified, column)
            has_defaults = has_defaults or default_text is not None
            default: sql.Composable = (
                sql.SQL(" DEFAULT {}").format(sql.SQL(default_text)) if default_text is not None else sql.SQL("")
            )
            generation: sql.Composable = sql.SQL("")
            if column.get("generated"):
                # Checked by _check_description to stay inside these parentheses.
                generation = sql.SQL(" GENERATED ALWAYS AS ({}) STORED").format(sql.SQL(column["expression"]))
            full.append(sql.Composed([definition, generation, default, not_null]))
            without_generated.append(sql.Composed([definition, default, not_null]))
            bare.append(sql.Composed([definition, not_null]))
        self.conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(description["schema"])))
        # Should this database refuse a generation expression (one naming an
        # enum made here as text, say) or a default (a SQLite default that
        # PostgreSQL reads otherwise), the table is made without them, at
        # worst as a 1.0 archive made it, and every value is loaded as
        # exported, rather than losing the whole load.
        generated = [column["name"] for column in description["columns"] if column.get("generated")]
        # Each attempt: the columns, which of them are computed, and what it leaves out.
        attempts: list[tuple[list[sql.Composable], list[str], str]] = [(full, generated, "")]
        if generated:
            attempts.append((without_generated, [], "generation expressions"))
        if has_defaults:
            attempts.append((bare, [], "defaults"))
        for number, (columns, computed, _) in enumerate(attempts):
            try:
                with self.conn.transaction():
                    # Prepared: one statement, whatever the expressions say.
                    self.conn.execute(
                        sql.SQL("CREATE TABLE {} ({})").format(table, sql.SQL(", ").join(columns)), prepare=True
                    )
            except psycopg.Error as exc:
                if number == len(attempts) - 1:
                    raise
                logger.warning(
                    "Table %s of the export is created without its %s, which this database refused: %s",
                    qualified,
                    attempts[number + 1][2],
                    self._error_text(exc),
                )
                continue
            description["_generated"] = computed
            return

    def _default(self, qualified: str, column: Column) -> str | None:
        """The column's constant default as this database should read it, or None."""
        if column.get("default") is None:
            return None
        parsed = parse_constant(column["default"])
        assert parsed is not None, "checked by _check_description"
        literal, casts = parsed
        if column.get("create_as"):
            # The column's own type (an enum, a domain, a SQLite declaration)
            # is not made here: the bare literal goes into the created type.
            casts = []
        for cast in casts:
            if not self._known_type(cast):
                logger.warning(
                    "Column %s of %s keeps no default: this database has no type %s",
                    column["name"],
                    qualified,
                    cast[:100],
                )
                return None
        return literal + "".join(f"::{cast}" for cast in casts)

    def _known_type(self, type_name: str) -> bool:
        """to_regtype() parses the text as exactly one type name, so a type
        written into CREATE TABLE cannot carry anything else."""
        try:
            with self.conn.transaction():
                return one(self.conn, "SELECT to_regtype(%s)", [type_name]) is not None
        except psycopg.Error:
            return False

    def _abandon(self, reason: str) -> None:
        """Nothing of this load will be committed; the reading goes on to the manifest."""
        self.conn.rollback()
        self.loaded = {}
        self.load_error = reason

    def _error_text(self, exc: Exception) -> str:
        return query_error(exc, self.params)

    def _load(self, description: Description, fmt: str, reader: HashingReader) -> int:
        qualified = self._qualified(description)
        table = sql.Identifier(description["schema"], description["name"])
        # A generated column is computed by this database: its exported
        # values are read past, never written (PostgreSQL refuses them).
        generated = set(description.get("_generated") or ())
        columns = [column for column in description["columns"] if column["name"] not in generated]
        names = sql.SQL(", ").join(sql.Identifier(column["name"]) for column in columns)
        if fmt == "csv":
            rows = self._load_csv(description, table, names, reader, staged=bool(generated))
        elif fmt == "jsonl":
            rows = self._load_jsonl(columns, table, names, reader)
        elif fmt == "sql":
            rows = self._load_sql(description, table, reader, generated)
        else:
            raise CorruptionError(f"The export's member for {qualified} has an unknown format: {fmt}")
        self._finish_table(table, description)
        self.loaded[qualified] = rows
        return rows

    def _finish_table(self, table: sql.Identifier, description: Description) -> None:
        """The primary key, then each identity column with its sequence
        continuing past the recorded value and past every loaded one."""
        primary_key = description.get("primary_key") or []
        if primary_key:
            self.conn.execute(
                sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(
                    table, sql.SQL(", ").join(map(sql.Identifier, primary_key))
                )
            )
        for column in description["columns"]:
            if column.get("identity") and column["name"] not in (description.get("_generated") or ()):
                self._add_identity(table, column)

    def _add_identity(self, table: sql.Identifier, column: Column) -> None:
        name = sql.Identifier(column["name"])
        sequence = column.get("sequence") or {}
        options: list[sql.Composable] = [
            sql.SQL(f"{clause} {{}}").format(sql.Literal(sequence[key]))
            for key, clause in (
                ("start", "START WITH"),
                ("increment", "INCREMENT BY"),
                ("minimum", "MINVALUE"),
                ("maximum", "MAXVALUE"),
                ("cache", "CACHE"),
            )
            if sequence.get(key) is not None
        ]
        if sequence.get("cycle") is not None:
            options.append(sql.SQL("CYCLE" if sequence["cycle"] else "NO CYCLE"))
        self.conn.execute(
            sql.SQL("ALTER TABLE {} ALTER COLUMN {} ADD GENERATED {} AS IDENTITY{}").format(
                table,
                name,
                sql.SQL("ALWAYS" if column["identity"] == "always" else "BY DEFAULT"),
                sql.SQL(" ({})").format(sql.SQL(" ").join(options)) if options else sql.SQL(""),
            )
        )
        rising = (sequence.get("increment") or 1) > 0
        row = self.conn.execute(
            sql.SQL(
                "SELECT s.seqrelid::regclass::text, s.seqmin, s.seqmax, (SELECT {}({}) FROM {}) "
                "FROM pg_sequence s WHERE s.seqrelid = pg_get_serial_sequence(%s, %s)::regclass"
            ).format(sql.SQL("max" if rising else "min"), name, table),
            [table.as_string(self.conn), column["name"]],
        ).fetchone()
        assert row is not None, "the identity column just added has its sequence"
        seq, low, high, furthest = row
        reached = [value for value in (sequence.get("last_value"), furthest) if value is not None]
        if reached:
            value = max(reached) if rising else min(reached)
            self.conn.execute("SELECT setval(%s::regclass, %s, true)", [seq, min(max(value, low), high)])

    def _load_csv(
        self, description: Description, table: sql.Identifier, names: sql.Composed, reader: HashingReader, staged: bool
    ) -> int:
        if staged:
            # COPY cannot skip a field of its input: the rows go into a
            # temporary copy of the table (LIKE makes generated columns
            # plain), then across without the generated columns.
            every = sql.SQL(", ").join(sql.Identifier(column["name"]) for column in description["columns"])
            self.conn.execute(
                sql.SQL("CREATE TEMPORARY TABLE strongroom_export_rows (LIKE {}) ON COMMIT DROP").format(table)
            )
            target = sql.SQL("strongroom_export_rows ({})").format(every)
        else:
            target = sql.SQL("{} ({})").format(table, names)
        cursor = self.conn.cursor()
        with cursor.copy(sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv, HEADER true)").format(target)) as copy:
            while data := reader.read():
                copy.write(data)
        if not staged:
            return cursor.rowcount
        rows = self.conn.execute(
            sql.SQL("INSERT INTO {0} ({1}) SELECT {1} FROM strongroom_export_rows").format(table, names)
        ).rowcount
        self.conn.execute("DROP TABLE strongroom_export_rows")
        return rows

    def _load_jsonl(
        self, columns: list[Column], table: sql.Identifier, names: sql.Composed, reader: HashingReader
    ) -> int:
        """COPY the lines into a temporary table (fast, in C), then let
        PostgreSQL turn them into rows with json_populate_record(); a batch
        at a time, so the temporary table stays small."""
        picks = sql.SQL(", ").join(
            sql.SQL("(l.line::json ->> {})::{}").format(
                sql.Literal(column["name"]), sql.SQL(column.get("create_as") or column["type"])
            )
            if column.get("as_text")
            else sql.SQL("r.{}").format(sql.Identifier(column["name"]))
            for column in columns
        )
        self.conn.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS strongroom_export_lines (n bigserial, line text) ON COMMIT DROP"
        )
        insert = sql.SQL(
            "INSERT INTO {0} ({1}) SELECT {2} FROM strongroom_export_lines AS l "
            "CROSS JOIN LATERAL json_populate_record(NULL::{0}, l.line::json) AS r ORDER BY l.n"
        ).format(table, names, picks)
        rows = 0
        lines = iter(reader.lines())
        while True:
            staged = 0
            with self.conn.cursor().copy("COPY strongroom_export_lines (line) FROM STDIN") as copy:
                for line in lines:
                    copy.write_row((line.decode(),))
                    staged += 1
                    if staged >= LOAD_BATCH_ROWS:
                        break
            if staged:
                rows += self.conn.execute(insert).rowcount
                self.conn.execute("TRUNCATE strongroom_export_lines")
            if staged < LOAD_BATCH_ROWS:
                return rows

    def _load_sql(
        self, description: Description, table: sql.Identifier, reader: HashingReader, generated: set[str]
    ) -> int:
        qualified = self._qualified(description)
        every = [column["name"] for column in description["columns"]]
        prefix = (
            sql.SQL("INSERT INTO {} ({}) VALUES (")
            .format(table, sql.SQL(", ").join(map(sql.Identifier, every)))
            .as_string(self.conn)
        )
        if generated:
            kept = [name not in generated for name in every]
            kept_prefix = (
                sql.SQL("INSERT INTO {} ({}) VALUES (")
                .format(table, sql.SQL(", ").join(sql.Identifier(name) for name in every if name not in generated))
                .as_string(self.conn)
            )
        rows = 0
        batch, held = [], 0
        for statement in insert_statements(reader, prefix, qualified):
            if generated:
                # The statement is checked to be literals only; the same
                # INSERT without the generated columns' values.
                values = re.findall(LITERAL, statement[len(prefix) :])
                if len(values) != len(every):
                    raise CorruptionError(f"A row of {qualified} has {len(values)} values for {len(every)} columns")
                statement = (
                    kept_prefix + ", ".join(value for value, keep in zip(values, kept, strict=True) if keep) + ");"
                )
            batch.append(statement)
            held += len(statement)
            if len(batch) >= LOAD_BATCH_ROWS or held >= LOAD_BATCH_BYTES:
                rows += self._execute_statements(batch)
                batch, held = [], 0
        if batch:
            rows += self._execute_statements(batch)
        return rows

    def _execute_statements(self, statements: list[str]) -> int:
        # Each one checked above to be a single INSERT of literals: sent
        # together as one simple query to save round trips.
        self.conn.execute("\n".join(statements))
        return len(statements)


def well_formed_rules(column: Column) -> bool:
    """Whether a column's optional keys (archive 1.1) are what an export
    writes: a constant default, a generation expression that stays inside
    its parentheses, integers for a sequence. Unknown keys are ignored."""
    if not isinstance(column.get("not_null", False), bool):
        return False
    if "default" in column and parse_constant(column["default"]) is None:
        return False
    if "generated" in column and (
        column["generated"] != "stored"
        or not is_balanced_expression(column.get("expression"))
        or "default" in column
        or "identity" in column
    ):
        return False
    if "identity" in column:
        sequence = column.get("sequence", {})
        if column["identity"] not in ("always", "by default") or "default" in column or not isinstance(sequence, dict):
            return False
        for key in ("start", "increment", "minimum", "maximum", "cache", "last_value"):
            value = sequence.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                return False
        if sequence.get("increment") == 0 or not isinstance(sequence.get("cycle", False), bool):
            return False
    return True


def load_export(fileobj: IO[bytes], target_conninfo: Mapping[str, Any], tables: Iterable[str] | None = None) -> Loaded:
    """Reads an export archive (a plain, decrypted and decompressed stream,
    read sequentially) into the target PostgreSQL database: creates each
    table from its recorded column types and primary key, loads its rows,
    all in one transaction, committed only if every member matches the
    manifest (CorruptionError otherwise). `tables`: only these qualified
    names. Returns {"schema.table": rows loaded}."""
    params = normalize_conninfo(target_conninfo)
    wanted = None if tables is None else list(tables)
    conn = connect(params)
    try:
        for name, value in SESSION.items():
            conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(name), sql.Literal(value)))
        loaded = ExportLoader(conn, params, wanted).run(fileobj)
        conn.commit()
        return loaded
    except psycopg.Error as exc:
        conn.rollback()
        raise EngineError(f"Could not load the export: {query_error(exc, params)}") from exc
    except BaseException:
        conn.rollback()
        raise
    finally:
        conn.close()
