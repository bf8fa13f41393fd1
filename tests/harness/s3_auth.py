"""A moto server that enforces IAM, for "access denied" as a real bucket gives it.

moto checks credentials only when INITIAL_NO_AUTH_ACTION_COUNT is set before
it starts, so this one runs in its own process. The first few calls are free
(to create the bucket and a user); after that every request is authorised.
"""

import os
import subprocess
import sys
import time
import urllib.request

import boto3

from tests.harness.pg import free_port

FREE_CALLS = 3


def start_auth_server():
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(FREE_CALLS)}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return process, endpoint_url


def bucket_with_powerless_user(endpoint_url, bucket):
    """Creates `bucket` and an IAM user with no permissions; returns its keys."""
    session = dict(
        endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    boto3.client("s3", **session).create_bucket(Bucket=bucket)
    iam = boto3.client("iam", **session)
    iam.create_user(UserName="nobody")
    keys = iam.create_access_key(UserName="nobody")["AccessKey"]
    return keys["AccessKeyId"], keys["SecretAccessKey"]
