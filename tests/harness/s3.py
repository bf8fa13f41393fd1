"""moto's standalone S3 server, reached over HTTP exactly like a real bucket."""

import boto3
from moto.server import ThreadedMotoServer

from tests.harness.pg import free_port

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


def start_server():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def client(endpoint_url):
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=CREDENTIALS["region"],
        aws_access_key_id=CREDENTIALS["access_key_id"],
        aws_secret_access_key=CREDENTIALS["secret_access_key"],
    )


def all_keys(endpoint_url, bucket):
    pages = client(endpoint_url).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def open_uploads(endpoint_url, bucket):
    return client(endpoint_url).list_multipart_uploads(Bucket=bucket).get("Uploads", [])
