import subprocess
import uuid

import pytest

from catalog.engine import mariadb
from catalog.engine.mariadb_dump import dump_argv, tool_version
from tests.harness.mariadb_sample import mariadb_sample  # noqa: F401 - a fixture for this folder's tests


def dump_of(server, database, *tables, extra=()):
    """mariadb-dump's bytes for `database`, with Strongroom's own flags."""
    params = {**server.info(), "dbname": database}
    tool = mariadb.find_tool(mariadb.DUMP_TOOLS)
    with mariadb.option_file(params) as path:
        argv = dump_argv(tool, path, tool_version(tool), database, tables)
        argv[2:2] = list(extra)
        done = subprocess.run(argv, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def load_dump(server, database, dump):
    """Loads a dump with the `mariadb` client, as a person restoring it by hand would."""
    params = {**server.info(), "dbname": database}
    with mariadb.option_file(params) as path:
        done = subprocess.run(
            [mariadb.find_tool(mariadb.CLIENT_TOOLS), f"--defaults-file={path}", database],
            input=dump,
            capture_output=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture
def fresh_database(mariadb_server):
    """A second empty database to load a dump into."""
    name = mariadb_server.create_database(f"sr_loaded_{uuid.uuid4().hex[:8]}")
    yield name
    mariadb_server.drop_database(name)
