import psycopg

from tests.harness import s3


def test_it_gives_a_fresh_database(pg_database):
    with psycopg.connect(**pg_database) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == pg_database["dbname"]


def test_it_serves_s3_over_http(s3_bucket):
    client = s3.client(s3_bucket["endpoint_url"])
    client.put_object(Bucket=s3_bucket["bucket"], Key="probe", Body=b"x")
    assert s3.all_keys(s3_bucket["endpoint_url"], s3_bucket["bucket"]) == ["probe"]
