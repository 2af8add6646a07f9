"""Access denied: a moto server (its own process) that enforces authentication after set-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

import fb
from fb.backends import FBStore, PreparedPath
from fb.testing.moto import moto_server_process

BUCKET = "denied-bucket"


@pytest.fixture(name="strict_endpoint", scope="module")
def fixture_strict_endpoint() -> Iterator[str]:
    """An endpoint that lets one request through (creating the bucket), then denies all.

    Every later request needs valid IAM credentials, which the dummy keys are not.
    """
    with moto_server_process({"INITIAL_NO_AUTH_ACTION_COUNT": "1"}) as endpoint:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        client.create_bucket(Bucket=BUCKET)  # the one free request
        yield endpoint


def _options(endpoint: str) -> dict[str, Any]:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


def test_open_pool_without_access_raises_permission_error_naming_the_url(
    strict_endpoint: str,
) -> None:
    """A store refused by the server raises PermissionError naming the URL, never a hang."""
    url = f"s3://{BUCKET}/spill"
    with pytest.raises(PermissionError) as info:
        fb.open_pool(url, max_items=1, storage_options=_options(strict_endpoint))
    assert f"s3://{BUCKET}" in str(info.value)


def test_tracking_a_location_without_access_raises_permission_error(
    strict_endpoint: str, tmp_path: Any
) -> None:
    """Tracking an S3 persist location the server refuses raises PermissionError naming it;
    the local store stays usable."""
    store: fb.BackingStore[str] = fb.BackingStore(FBStore("pickle", tmp_path / "cache"))
    try:
        url = f"s3://{BUCKET}/durable"
        with pytest.raises(PermissionError) as info:
            store.track_path(PreparedPath(url, storage_options=_options(strict_endpoint)))
        assert url in str(info.value)
        pool: fb.FBPool[str] = fb.FBPool(store, max_items=0)
        handle = pool.insert("still works")
        with handle.load() as value:
            assert value == "still works"
        handle.close()
        store.finished()
    finally:
        store.close()
