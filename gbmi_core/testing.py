"""Helpers for tests of stores on object storage: a real S3-compatible server on this machine.

>>> with s3_server() as env:        # doctest: +SKIP
...     os.environ.update(env)
...     store = Store(f"s3://{env['GBMI_TEST_BUCKET']}/sweep")

The server is moto's (``pip install 'moto[server]'``, in gbmi-core's ``test`` extra): the S3 HTTP API on
127.0.0.1, in a thread of this process, reachable from other processes through the environment it returns
(the usual AWS variables: endpoint, dummy credentials, region).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Iterator


@contextlib.contextmanager
def s3_server(bucket: str = "gbmi") -> Iterator[dict[str, str]]:
    """Start an S3 server with one empty ``bucket``; yields the environment a client needs."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "GBMI_TEST_BUCKET": bucket}
    try:
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=bucket)
        yield env
    finally:
        server.stop()
