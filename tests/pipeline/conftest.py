"""Fixtures for pipeline tests: a real S3 server (SeaweedFS) on loopback."""
from __future__ import annotations

import pytest

from s3server import S3Server  # noqa: E402  (tests/pipeline is on sys.path: rootdir-relative imports)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS for the session: started on free ports, stopped at teardown."""
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """AWS settings for this process pointing at the test server (the standard variables only)."""
    for key in ("AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server
