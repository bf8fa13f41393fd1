"""A realistic MariaDB sample database, and a fingerprint to prove a restore exact.

Modelled on what MySQL's Sakila and employees sample databases contain, since
those are what users try first: views (one with a DEFINER naming another
user, one SQL SECURITY INVOKER), triggers (Sakila's film -> film_text trio,
which double film_text's rows if a restore creates them before the data),
a procedure and a function, a disabled event, FULLTEXT and SPATIAL indexes,
GEOMETRY, ENUM/SET/YEAR/BIT/DECIMAL/DATETIME(6)/TIME(3)/TIMESTAMP with
defaults, JSON, BLOBs of random bytes, utf8mb4 (emoji), VIRTUAL and STORED
generated columns (which a dump must not insert into), AUTO_INCREMENT with a
gap, a customer -> rental -> payment chain of foreign keys with ON DELETE
CASCADE, a RANGE-partitioned table, a table without a primary key (with
duplicate rows), and tables named `order lines` and `odd``name`.

Strings are full of what trips a dump or a parser of one: quotes, backslashes,
parentheses, commas, "'),('", semicolons, comment markers, NUL and ^Z bytes,
newlines and emoji. The data is random (seeded, so every load is the same)
and does not compress to nothing: about 4,000 rows in the largest tables and
a few hundred KB of random bytes at scale 1.

    load_sample(connection, database, scale=1)   # a PyMySQL connection
    fingerprint(connection, database) == fingerprint(connection, restored)

SAMPLE_DEFINER is a user this module creates (and grants DML, EXECUTE, TRIGGER and EVENT on
*.*) so that the DEFINER clauses name someone other than the dumping user;
drop it to see what a restore does with a definer that does not exist.
"""

import contextlib
import datetime
import decimal
import hashlib
import random
import struct
import uuid

import pytest

SAMPLE_DEFINER = "`sample_owner`@`localhost`"

# Strings that break a naive SQL scanner or a naive dump: a row-count scanner
# over INSERT statements must count each of these as one value.
TRICKY_STRINGS = [
    "it's",
    "''",
    "'),('",
    "'), ('x', 'y'",
    "back\\slash",
    "\\'",
    "ends with a backslash \\",
    "(paren",
    "paren)",
    "a,b,c",
    "semi;colon",
    "/* not a comment */",
    "/*!40101 SET NAMES latin1 */",
    "-- not a comment",
    "# not a comment",
    'double "quotes"',
    "back`tick",
    "line\nbreak\r\nwindows",
    "tab\there",
    "nul\x00byte",
    "ctrl-z\x1a",
    "NULL",
    "",
    "emoji 🎉🔥👩‍👩‍👧 and ümlauts, 日本語, مرحبا",
    "0x41",
    "x'41'",
    "VALUES (1),(2);",
]

SCHEMA = [
    """CREATE TABLE language (
        language_id TINYINT UNSIGNED NOT NULL AUTO_INCREMENT,
        name CHAR(20) NOT NULL,
        last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
        PRIMARY KEY (language_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE film (
        film_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT,
        title VARCHAR(128) NOT NULL,
        description TEXT,
        release_year YEAR DEFAULT NULL,
        language_id TINYINT UNSIGNED NOT NULL,
        rental_duration TINYINT UNSIGNED NOT NULL DEFAULT 3,
        rental_rate DECIMAL(4,2) NOT NULL DEFAULT 4.99,
        length SMALLINT UNSIGNED DEFAULT NULL,
        replacement_cost DECIMAL(5,2) NOT NULL DEFAULT 19.99,
        rating ENUM('G','PG','PG-13','R','NC-17') DEFAULT 'G',
        special_features SET('Trailers','Commentaries','Deleted Scenes','Behind the Scenes') DEFAULT NULL,
        metadata JSON DEFAULT NULL,
        last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
        PRIMARY KEY (film_id),
        KEY idx_title (title),
        CONSTRAINT fk_film_language FOREIGN KEY (language_id) REFERENCES language (language_id)
            ON DELETE RESTRICT ON UPDATE CASCADE
    ) ENGINE=InnoDB""",
    """CREATE TABLE film_text (
        film_id SMALLINT UNSIGNED NOT NULL,
        title VARCHAR(255) NOT NULL,
        description TEXT,
        PRIMARY KEY (film_id),
        FULLTEXT KEY idx_title_description (title, description)
    ) ENGINE=InnoDB""",
    """CREATE TABLE address (
        address_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT,
        address VARCHAR(50) NOT NULL,
        district VARCHAR(20) NOT NULL,
        city VARCHAR(50) NOT NULL,
        postal_code VARCHAR(10) DEFAULT NULL,
        phone VARCHAR(20) NOT NULL,
        location GEOMETRY NOT NULL,
        details JSON DEFAULT NULL,
        last_update TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
        PRIMARY KEY (address_id),
        SPATIAL KEY idx_location (location)
    ) ENGINE=InnoDB""",
    """CREATE TABLE customer (
        customer_id SMALLINT UNSIGNED NOT NULL AUTO_INCREMENT,
        first_name VARCHAR(45) NOT NULL,
        last_name VARCHAR(45) NOT NULL,
        email VARCHAR(50) DEFAULT NULL,
        address_id SMALLINT UNSIGNED NOT NULL,
        active BOOLEAN NOT NULL DEFAULT TRUE,
        flags BIT(8) NOT NULL DEFAULT b'00000000',
        full_name VARCHAR(91) AS (CONCAT(first_name, ' ', last_name)) STORED,
        email_domain VARCHAR(50) AS (SUBSTRING_INDEX(email, '@', -1)) VIRTUAL,
        create_date DATETIME(6) NOT NULL,
        last_update TIMESTAMP NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
        PRIMARY KEY (customer_id),
        KEY idx_full_name (full_name),
        CONSTRAINT fk_customer_address FOREIGN KEY (address_id) REFERENCES address (address_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE rental (
        rental_id INT NOT NULL AUTO_INCREMENT,
        rental_date DATETIME NOT NULL,
        film_id SMALLINT UNSIGNED NOT NULL,
        customer_id SMALLINT UNSIGNED NOT NULL,
        return_date DATETIME DEFAULT NULL,
        days_out INT AS (DATEDIFF(return_date, rental_date)) VIRTUAL,
        PRIMARY KEY (rental_id),
        UNIQUE KEY rental_date (rental_date, film_id, customer_id),
        CONSTRAINT fk_rental_customer FOREIGN KEY (customer_id) REFERENCES customer (customer_id)
            ON DELETE CASCADE,
        CONSTRAINT fk_rental_film FOREIGN KEY (film_id) REFERENCES film (film_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE payment (
        payment_id INT NOT NULL AUTO_INCREMENT,
        rental_id INT NOT NULL,
        amount DECIMAL(5,2) NOT NULL,
        payment_date DATETIME(6) NOT NULL,
        PRIMARY KEY (payment_id),
        CONSTRAINT fk_payment_rental FOREIGN KEY (rental_id) REFERENCES rental (rental_id) ON DELETE CASCADE
    ) ENGINE=InnoDB""",
    """CREATE TABLE employees (
        emp_no INT NOT NULL,
        birth_date DATE NOT NULL,
        first_name VARCHAR(14) NOT NULL,
        last_name VARCHAR(16) NOT NULL,
        gender ENUM('M','F') NOT NULL,
        hire_date DATE NOT NULL,
        PRIMARY KEY (emp_no)
    ) ENGINE=InnoDB""",
    # InnoDB refuses foreign keys on partitioned tables, as employees' own does.
    """CREATE TABLE salaries (
        emp_no INT NOT NULL,
        salary INT NOT NULL,
        from_date DATE NOT NULL,
        to_date DATE NOT NULL,
        PRIMARY KEY (emp_no, from_date)
    ) ENGINE=InnoDB
    PARTITION BY RANGE (YEAR(from_date)) (
        PARTITION p1990 VALUES LESS THAN (1995),
        PARTITION p1995 VALUES LESS THAN (2000),
        PARTITION p2000 VALUES LESS THAN (2010),
        PARTITION pmax VALUES LESS THAN MAXVALUE
    )""",
    """CREATE TABLE audit_log (
        happened_at DATETIME(6) NOT NULL,
        actor VARCHAR(32) NOT NULL,
        action VARCHAR(16) NOT NULL,
        detail TEXT
    ) ENGINE=InnoDB""",
    """CREATE TABLE blob_store (
        id INT NOT NULL AUTO_INCREMENT,
        name VARCHAR(64) NOT NULL,
        payload MEDIUMBLOB,
        digest BINARY(16) NOT NULL,
        bits BIT(13) DEFAULT NULL,
        ratio DOUBLE DEFAULT NULL,
        PRIMARY KEY (id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE `order lines` (
        id INT NOT NULL AUTO_INCREMENT,
        sku VARCHAR(32) NOT NULL,
        note TEXT,
        qty INT NOT NULL DEFAULT 1,
        price DECIMAL(10,2) NOT NULL,
        shipped_on DATE DEFAULT NULL,
        PRIMARY KEY (id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE `odd``name` (
        k VARCHAR(40) NOT NULL,
        v TEXT,
        y YEAR DEFAULT 2024,
        t TIME(3) DEFAULT NULL,
        PRIMARY KEY (k)
    ) ENGINE=InnoDB""",
    # Money moved between rows in a loop keeps the sum: a consistent dump
    # restores the same sum whatever was committed while it ran.
    """CREATE TABLE accounts (
        id INT NOT NULL,
        owner VARCHAR(40) NOT NULL,
        balance DECIMAL(12,2) NOT NULL,
        PRIMARY KEY (id)
    ) ENGINE=InnoDB""",
]

ROUTINES = [
    f"""CREATE DEFINER={SAMPLE_DEFINER} TRIGGER ins_film AFTER INSERT ON film FOR EACH ROW
        INSERT INTO film_text (film_id, title, description) VALUES (NEW.film_id, NEW.title, NEW.description)""",
    f"""CREATE DEFINER={SAMPLE_DEFINER} TRIGGER upd_film AFTER UPDATE ON film FOR EACH ROW
        BEGIN
            IF (OLD.title != NEW.title) OR (OLD.description != NEW.description) OR (OLD.film_id != NEW.film_id) THEN
                UPDATE film_text SET title = NEW.title, description = NEW.description, film_id = NEW.film_id
                WHERE film_id = OLD.film_id;
            END IF;
        END""",
    """CREATE TRIGGER del_film AFTER DELETE ON film FOR EACH ROW
        DELETE FROM film_text WHERE film_id = OLD.film_id""",
    """CREATE TRIGGER customer_create_date BEFORE INSERT ON customer FOR EACH ROW
        SET NEW.create_date = COALESCE(NEW.create_date, NOW(6))""",
    f"""CREATE DEFINER={SAMPLE_DEFINER} SQL SECURITY DEFINER VIEW customer_list AS
        SELECT cu.customer_id AS ID, cu.full_name AS name, a.address, a.postal_code AS `zip code`,
               a.phone, a.city, IF(cu.active, _utf8mb4'active', _utf8mb4'') AS notes
        FROM customer cu JOIN address a ON cu.address_id = a.address_id""",
    """CREATE SQL SECURITY INVOKER VIEW sales_by_rating AS
        SELECT f.rating, COUNT(*) AS rentals, SUM(p.amount) AS total
        FROM payment p JOIN rental r ON p.rental_id = r.rental_id JOIN film f ON r.film_id = f.film_id
        GROUP BY f.rating""",
    f"""CREATE DEFINER={SAMPLE_DEFINER} PROCEDURE film_in_stock(IN p_film_id INT, OUT p_count INT)
        READS SQL DATA
        BEGIN
            SELECT COUNT(*) INTO p_count FROM rental WHERE film_id = p_film_id AND return_date IS NOT NULL;
        END""",
    """CREATE FUNCTION get_customer_balance(p_customer_id INT) RETURNS DECIMAL(7,2)
        DETERMINISTIC READS SQL DATA
        BEGIN
            DECLARE v_total DECIMAL(7,2);
            SELECT COALESCE(SUM(p.amount), 0) INTO v_total FROM payment p
                JOIN rental r ON r.rental_id = p.rental_id WHERE r.customer_id = p_customer_id;
            RETURN v_total;
        END""",
    f"""CREATE DEFINER={SAMPLE_DEFINER} EVENT purge_old_audit
        ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00'
        ON COMPLETION PRESERVE DISABLE
        COMMENT 'Keeps a year of audit_log; disabled so that it never runs in the tests'
        DO DELETE FROM audit_log WHERE happened_at < NOW() - INTERVAL 1 YEAR""",
]

WORDS = (
    "amazing",
    "drama",
    "epic",
    "saga",
    "documentary",
    "thoughtful",
    "astounding",
    "boring",
    "emotional",
    "fateful",
    "touching",
    "insightful",
    "brilliant",
    "intrepid",
    "lacklusture",
    "stunning",
    "unbelievable",
    "awe-inspiring",
    "beautiful",
    "action-packed",
    "reflection",
    "story",
    "tale",
    "character",
    "feminist",
    "dog",
    "cat",
    "moose",
    "pastry",
    "crocodile",
    "mad",
    "scientist",
    "robot",
    "monkey",
    "teacher",
    "explorer",
    "woman",
    "man",
    "lumberjack",
    "hunter",
    "butler",
    "sumo",
    "wrestler",
    "astronaut",
    "database",
    "shark",
)


def words(rng, low, high):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def point_wkb(x, y):
    """MariaDB's internal geometry value (SRID, then WKB): a GEOMETRY column
    takes it as a plain string, so rows load in bulk without ST_ functions."""
    return struct.pack("<IBIdd", 0, 1, 1, x, y)


def load_sample(connection, database, scale=1, seed=24):
    """Creates the sample's schema and data in `database` (which exists and is
    empty) over a PyMySQL connection whose user may create users and DEFINERs
    (SUPER or SET USER), as the harness's user may."""
    rng = random.Random(seed)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE USER IF NOT EXISTS {SAMPLE_DEFINER}")
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE, EXECUTE, TRIGGER, EVENT ON *.* TO {SAMPLE_DEFINER}")
        cursor.execute(f"USE {quote(database)}")
        cursor.execute("SET NAMES utf8mb4")
        for statement in SCHEMA:
            cursor.execute(statement)
        for statement in ROUTINES:
            cursor.execute(statement)
        insert_data(cursor, rng, scale)
    connection.commit()


def insert_data(cursor, rng, scale):
    stamp = datetime.datetime(2024, 2, 29, 12, 0, 0)
    languages = ["English", "Italian", "Japanese", "Mandarin", "French", "German"]
    cursor.executemany(
        "INSERT INTO language (name, last_update) VALUES (%s, %s)", [(name, stamp) for name in languages]
    )
    films = 1000 * scale
    cursor.executemany(
        "INSERT INTO film (title, description, release_year, language_id, rental_duration, rental_rate, length,"
        " replacement_cost, rating, special_features, metadata, last_update)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (
                f"{words(rng, 2, 3).upper()} {i}",
                f"A {words(rng, 6, 14)} who must {rng.choice(TRICKY_STRINGS)} in {rng.randbytes(6).hex()}",
                rng.choice([None, *range(1990, 2025)]),
                rng.randint(1, len(languages)),
                rng.randint(3, 7),
                decimal.Decimal(rng.choice(["0.99", "2.99", "4.99"])),
                rng.choice([None, rng.randint(46, 185)]),
                decimal.Decimal(rng.randint(999, 2999)) / 100,
                rng.choice(["G", "PG", "PG-13", "R", "NC-17", None]),
                ",".join(
                    rng.sample(["Trailers", "Commentaries", "Deleted Scenes", "Behind the Scenes"], rng.randint(0, 3))
                )
                or None,
                rng.choice([None, '{"awards": [], "cut": "director\'s"}', f'{{"id": {i}, "tags": ["a,b", "(c)"]}}']),
                stamp,
            )
            for i in range(films)
        ],
    )
    addresses = 600 * scale
    cursor.executemany(
        "INSERT INTO address (address, district, city, postal_code, phone, location, details, last_update)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (
                f"{rng.randint(1, 1999)} {words(rng, 1, 2).title()} Street",
                rng.choice(["Alberta", "QLD", "Nagasaki", "Île-de-France", "Баку", "Kanagawa"]),
                rng.choice(["Lethbridge", "Woodridge", "Sasebo", "Paris", "Bakı", "Yokohama 🗼"]),
                rng.choice([None, f"{rng.randint(10000, 99999)}"]),
                f"+{rng.randint(10**9, 10**11)}",
                point_wkb(rng.uniform(-180, 180), rng.uniform(-90, 90)),
                rng.choice([None, '{"floor": 3, "door": "B\\\\2", "note": "ring twice \\"loud\\""}', "[]", "{}"]),
                stamp,
            )
            for _ in range(addresses)
        ],
    )
    customers = 600 * scale
    cursor.executemany(
        "INSERT INTO customer (first_name, last_name, email, address_id, active, flags, create_date, last_update)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (
                rng.choice(["MARY", "PATRICIA", "LINDA", "BARBARA", "ZOË", "ŁUKASZ", "O'NEIL", "Renée"]),
                rng.choice(["SMITH", "JOHNSON", "D'ARCY", "MÜLLER", "Nguyễn", "Back\\Slash", "李"]),
                rng.choice([None, f"user{i}@example.{rng.choice(['org', 'com', 'co.uk'])}"]),
                rng.randint(1, addresses),
                rng.random() < 0.9,
                bytes([rng.getrandbits(8)]),
                stamp + datetime.timedelta(seconds=rng.randint(0, 10**7), microseconds=rng.randint(0, 999999)),
                stamp,
            )
            for i in range(customers)
        ],
    )
    rentals = 4000 * scale
    rental_rows = []
    for i in range(rentals):
        start = stamp + datetime.timedelta(minutes=i * 7 + rng.randint(0, 6))
        back = rng.choice([None, start + datetime.timedelta(days=rng.randint(0, 9), hours=rng.randint(0, 23))])
        rental_rows.append((start, rng.randint(1, films), rng.randint(1, customers), back))
    cursor.executemany(
        "INSERT INTO rental (rental_date, film_id, customer_id, return_date) VALUES (%s, %s, %s, %s)", rental_rows
    )
    cursor.executemany(
        "INSERT INTO payment (rental_id, amount, payment_date) VALUES (%s, %s, %s)",
        [
            (i + 1, decimal.Decimal(rng.randint(0, 1199)) / 100, start + datetime.timedelta(microseconds=i))
            for i, (start, *_rest) in enumerate(rental_rows)
        ],
    )
    employees = 1000 * scale
    cursor.executemany(
        "INSERT INTO employees VALUES (%s, %s, %s, %s, %s, %s)",
        [
            (
                10001 + i,
                datetime.date(1952, 1, 1) + datetime.timedelta(days=rng.randint(0, 5000)),
                rng.choice(["Georgi", "Bezalel", "Parto", "Chirstian", "Kyoichi", "Anneke", "Tzvetan"]),
                rng.choice(["Facello", "Simmel", "Bamford", "Koblick", "Maliniak", "Preusig", "Zielinski"]),
                rng.choice("MF"),
                datetime.date(1985, 1, 1) + datetime.timedelta(days=rng.randint(0, 5000)),
            )
            for i in range(employees)
        ],
    )
    salaries = []
    for i in range(employees):
        year = rng.randint(1986, 2015)
        for step in range(rng.randint(1, 9)):
            start = datetime.date(year + step, 6, 1)
            salaries.append((10001 + i, rng.randint(38000, 158000), start, start.replace(year=start.year + 1)))
    cursor.executemany("INSERT INTO salaries VALUES (%s, %s, %s, %s)", salaries)
    log = []
    for _ in range(500 * scale):
        row = (
            stamp + datetime.timedelta(seconds=rng.randint(0, 1000)),
            rng.choice(["alice", "bob", "cron"]),
            rng.choice(["login", "update", "delete"]),
            rng.choice([None, *TRICKY_STRINGS]),
        )
        log.append(row)
        if rng.random() < 0.1:
            log.append(row)  # exact duplicates: the table has no key to tell them apart
    cursor.executemany("INSERT INTO audit_log VALUES (%s, %s, %s, %s)", log)
    blobs = []
    for i in range(200 * scale):
        payload = rng.choice([None, b"", rng.randbytes(rng.randint(1, 4096)), b"'\\\x00\x1a),(" * 10])
        blobs.append(
            (
                f"blob-{i}-{rng.choice(TRICKY_STRINGS)[:40]}",
                payload,
                hashlib.md5(payload or b"").digest(),
                rng.choice([None, rng.getrandbits(13).to_bytes(2, "big")]),
                rng.choice([None, rng.uniform(-1e300, 1e300), 0.1, 1 / 3, -0.0]),
            )
        )
    cursor.executemany("INSERT INTO blob_store (name, payload, digest, bits, ratio) VALUES (%s, %s, %s, %s, %s)", blobs)
    cursor.executemany(
        "INSERT INTO `order lines` (sku, note, qty, price, shipped_on) VALUES (%s, %s, %s, %s, %s)",
        [
            (
                f"SKU-{i:05d}",
                rng.choice([None, *TRICKY_STRINGS, words(rng, 3, 30)]),
                rng.randint(-5, 500),
                decimal.Decimal(rng.randint(-100000, 10**9)) / 100,
                rng.choice([None, datetime.date(2024, 1, 1) + datetime.timedelta(days=rng.randint(0, 700))]),
            )
            for i in range(300 * scale)
        ],
    )
    # An AUTO_INCREMENT gap: the next id must survive the restore, not be max+1.
    cursor.execute("DELETE FROM `order lines` ORDER BY id DESC LIMIT 5")
    cursor.executemany(
        "INSERT INTO `odd``name` (k, v, y, t) VALUES (%s, %s, %s, %s)",
        [
            (
                f"{i:03d} {s[:30]}",
                s * rng.randint(1, 3),
                rng.choice([None, 1901, 2155, 2024]),
                rng.choice([None, "-838:59:59.000", "12:34:56.789"]),
            )
            for i, s in enumerate(TRICKY_STRINGS * 2)
        ],
    )
    cursor.executemany(
        "INSERT INTO accounts VALUES (%s, %s, %s)",
        [(i, f"owner {i}", decimal.Decimal("1000.00")) for i in range(1, 101)],
    )


def quote(name):
    return "`" + name.replace("`", "``") + "`"


def fingerprint(connection, database, definers=True):
    """What a restore must bring back exactly, as one comparable dict:
    "tables": {table: (row count, checksum of all rows)} where the checksum is
    the sum of the MD5s of the rows, so it is the same in any order and counts
    the duplicates of a table without a key; "schema": SHOW CREATE TABLE of
    each (AUTO_INCREMENT values, partitions, indexes and constraints included);
    and the views, routines, triggers and events with digests of their bodies
    (and, unless definers=False, their DEFINERs)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'"
            " ORDER BY table_name",
            (database,),
        )
        tables = [name for (name,) in cursor.fetchall()]
        result = {"tables": {}, "schema": {}}
        for table in tables:
            result["tables"][table] = table_checksum(cursor, database, table)
            cursor.execute(f"SHOW CREATE TABLE {quote(database)}.{quote(table)}")
            result["schema"][table] = cursor.fetchone()[1]
        result.update(
            objects(
                cursor,
                database,
                "views",
                "SELECT table_name, view_definition, security_type, definer"
                " FROM information_schema.views WHERE table_schema = %s",
                definers,
            )
        )
        result.update(
            objects(
                cursor,
                database,
                "routines",
                "SELECT CONCAT(routine_type, ' ', routine_name), routine_definition,"
                " sql_data_access, definer FROM information_schema.routines WHERE routine_schema = %s",
                definers,
            )
        )
        result.update(
            objects(
                cursor,
                database,
                "triggers",
                "SELECT CONCAT(trigger_name, ' ', action_timing, ' ',"
                " event_manipulation, ' ON ', event_object_table), action_statement, action_order, definer"
                " FROM information_schema.triggers WHERE trigger_schema = %s",
                definers,
            )
        )
        result.update(
            objects(
                cursor,
                database,
                "events",
                "SELECT event_name, event_definition,"
                " CONCAT(status, ' ', interval_value, ' ', interval_field), definer"
                " FROM information_schema.events WHERE event_schema = %s",
                definers,
            )
        )
    return result


def objects(cursor, database, kind, query, definers):
    """{name: (digest of the body, a property, definer)}, the database's own
    name taken out of the body (a view's definition names it, and a restore
    may use another name)."""
    cursor.execute(query, (database,))
    found = {}
    for name, body, detail, definer in cursor.fetchall():
        body = (body or "").replace(quote(database) + ".", "")
        found[name] = (hashlib.md5(body.encode()).hexdigest(), detail, definer if definers else None)
    return {kind: dict(sorted(found.items()))}


def table_checksum(cursor, database, table):
    cursor.execute(f"SELECT * FROM {quote(database)}.{quote(table)}")
    count, total = 0, 0
    for row in cursor.fetchall():
        count += 1
        total += int.from_bytes(hashlib.md5(repr(row).encode()).digest(), "big")
    return count, f"{total % (1 << 128):032x}"


def table_counts(connection, database):
    """{table: COUNT(*)} for every base table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (database,),
        )
        names = [name for (name,) in cursor.fetchall()]
        counts = {}
        for name in names:
            cursor.execute(f"SELECT COUNT(*) FROM {quote(database)}.{quote(name)}")
            counts[name] = cursor.fetchone()[0]
    return dict(sorted(counts.items()))


@contextlib.contextmanager
def sample_database(server, scale=1, prefix="sr_sample"):
    """A new database on `server` (tests.harness.mariadb's) loaded with the
    sample, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    server.create_database(name)
    try:
        with server.connect(name) as connection:
            load_sample(connection, name, scale=scale)
        yield name
    finally:
        server.drop_database(name)


@pytest.fixture
def mariadb_sample(mariadb_server):
    """A fresh database loaded with the sample (about 20,000 rows, 1 s); its name."""
    with sample_database(mariadb_server) as name:
        yield name
