"""A real S3 for the tests: moto's HTTP server on 127.0.0.1, reached through s3fs.

The fixtures here are imported by ``tests/conftest.py`` so that ``tests/s3`` and the S3
subclasses of the backend conformance suite (``tests/backends``) share one server.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from moto.server import ThreadedMotoServer

from fb.backends import PreparedPath

REGION = "us-east-1"

# Every variable botocore reads for credentials or endpoints: set to dummies, or removed, so
# that nothing a test does can reach the network or a developer's real AWS account.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/fb-tests/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/fb-tests/aws-credentials",
}
UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def storage_options(endpoint: str) -> dict[str, Any]:
    """Return the s3fs storage options that reach the moto server at ``endpoint``."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": REGION},
    }


@dataclass
class MotoServer:
    """The running moto server and a boto3 client for test set-up (not for fb)."""

    endpoint: str
    client: Any

    def make_bucket(self) -> str:
        """Create a bucket with a fresh unique name and return the name."""
        name = f"fb-test-{uuid.uuid4().hex[:16]}"
        self.client.create_bucket(Bucket=name)
        return name

    def drop_bucket(self, name: str) -> None:
        """Delete every object of bucket ``name``, then the bucket; a missing bucket is fine."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=name)
            for page in pages:
                objects = [{"Key": item["Key"]} for item in page.get("Contents", ())]
                if objects:
                    self.client.delete_objects(Bucket=name, Delete={"Objects": objects})
            self.client.delete_bucket(Bucket=name)
        except self.client.exceptions.NoSuchBucket:
            return


@dataclass
class S3Bucket:
    """A fresh bucket on the moto server, with the storage options that reach it."""

    server: MotoServer
    name: str
    options: dict[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        self.options = storage_options(self.server.endpoint)

    @property
    def endpoint(self) -> str:
        """The moto server's URL (``http://127.0.0.1:PORT``)."""
        return self.server.endpoint

    def url(self, *parts: str) -> str:
        """Return ``s3://<bucket>/<parts joined by />``."""
        return "/".join((f"s3://{self.name}", *parts))

    def location(self, *parts: str) -> PreparedPath:
        """Return a `PreparedPath` for ``url(*parts)`` with the storage options."""
        return PreparedPath(self.url(*parts), storage_options=self.options)

    def names(self, prefix: str = "") -> list[str]:
        """Return the names of every object in the bucket under ``prefix``, sorted."""
        pages = self.server.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def blobs(self, prefix: str = "") -> list[str]:
        """Return `names` under ``prefix`` but the leases of the stores open there."""
        return [name for name in self.names(prefix) if "/.fb-lease." not in f"/{name}"]

    def get(self, key: str) -> bytes:
        """Return the bytes of object ``key``."""
        body = self.server.client.get_object(Bucket=self.name, Key=key)["Body"]
        with body:
            data: bytes = body.read()
        return data

    def exists(self) -> bool:
        """Return whether the bucket exists."""
        try:
            self.server.client.head_bucket(Bucket=self.name)
        except self.server.client.exceptions.ClientError:
            return False
        return True


@pytest.fixture(name="aws_env", scope="session", autouse=True)
def fixture_aws_env() -> Iterator[None]:
    """Dummy AWS credentials and no profile for the whole session (subprocesses inherit)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in DUMMY_AWS_ENV.items():
            patch.setenv(name, value)
        for name in UNSET_AWS_ENV:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(name="moto_server", scope="session")
def fixture_moto_server(aws_env: None) -> Iterator[MotoServer]:
    """Moto's S3 server on a free port of 127.0.0.1, for the whole session."""
    # Werkzeug logs every request at INFO; keep the captured output readable.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield MotoServer(endpoint=endpoint, client=client)
    finally:
        client.close()
        server.stop()


@pytest.fixture(name="s3")
def fixture_s3(moto_server: MotoServer) -> Iterator[S3Bucket]:
    """A fresh, empty bucket of its own for one test; emptied and deleted afterwards."""
    name = moto_server.make_bucket()
    yield S3Bucket(server=moto_server, name=name)
    moto_server.drop_bucket(name)


@pytest.fixture(name="s3_options")
def fixture_s3_options(s3: S3Bucket) -> dict[str, Any]:
    """Storage options (dummy credentials, the moto endpoint) for the test's bucket."""
    return s3.options
