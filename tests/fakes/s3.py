"""A local S3-compatible server (moto's server mode) on 127.0.0.1, for object-storage tests.

:func:`s3_server` starts it in a thread and points the standard AWS variables at it
(``AWS_ENDPOINT_URL``, test credentials, a region), so boto3, s3fs and LitData all talk to it as
they would to S3; it stops, and the variables are restored, when the context ends.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

#: Credentials moto accepts (any pair works; these say what they are).
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ALLOW_HTTP": "true",  # the local server speaks plain HTTP (obstore refuses it otherwise)
}


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Run the server; yields its endpoint URL (``http://127.0.0.1:PORT``)."""
    import logging

    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in [*TEST_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update({**TEST_ENV, "AWS_ENDPOINT_URL": endpoint})
    S3FileSystem.clear_instance_cache()  # s3fs keeps one per arguments: it knows the old port
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def upload_folder(folder: Path, bucket: str, prefix: str) -> None:
    """Create ``bucket`` (if needed) and copy ``folder``'s files under ``prefix``."""
    import boto3

    client = boto3.client("s3")
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")
