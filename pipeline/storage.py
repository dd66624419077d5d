"""Where files live: local paths and `s3://` URIs mapped to one pyarrow filesystem.

Reading, listing and writing all go through `pyarrow.fs` so that every stage (the driver, Ray's
reader, the commit tasks) sees the same files with the same credentials: S3 takes the standard
AWS settings (environment variables, profiles, `AWS_ENDPOINT_URL`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow.fs as pafs

S3_SCHEME = "s3://"
# Attempts per S3 request (AWS standard retry: exponential backoff, capped): rides out a store
# that restarts or throttles for a few seconds (tests/pipeline/test_s3.py restarts the server).
S3_MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class Location:
    """A URI split into the filesystem that serves it and the path inside that filesystem."""

    uri: str  # as the user wrote it, normalised: absolute for local paths
    fs_path: str  # path for `filesystem` calls: "/abs/dir" locally, "bucket/key" on S3
    is_s3: bool

    @property
    def filesystem(self) -> pafs.FileSystem:
        return filesystem_for(self.is_s3)

    def child(self, *parts: str) -> "Location":
        """The location of `parts` joined under this one."""
        tail = "/".join(p.strip("/") for p in parts)
        return Location(uri=f"{self.uri.rstrip('/')}/{tail}", fs_path=f"{self.fs_path.rstrip('/')}/{tail}",
                        is_s3=self.is_s3)


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def locate(uri: str) -> Location:
    """Parse a local path or `s3://bucket/key` URI (no network access)."""
    if is_s3(uri):
        path = uri[len(S3_SCHEME):].strip("/")
        if not path:
            raise ValueError(f"{uri!r} names no bucket")
        return Location(uri=S3_SCHEME + path, fs_path=path, is_s3=True)
    if "://" in uri:
        raise ValueError(f"{uri!r}: only local paths and s3:// URIs are supported")
    path = os.path.abspath(os.path.expanduser(uri))
    return Location(uri=path, fs_path=path, is_s3=False)


def uri_of(fs_path: str, s3: bool) -> str:
    """The user-facing URI of a filesystem path (Ray's `path` column holds fs paths)."""
    return S3_SCHEME + fs_path if s3 else fs_path


def filesystem_for(s3: bool) -> pafs.FileSystem:
    """The filesystem for local paths or for S3.

    S3FileSystem() is built directly (not via `FileSystem.from_uri`, which asks AWS for the
    bucket's region over the network); it reads region, credentials and `AWS_ENDPOINT_URL`
    from the environment.
    """
    if not s3:
        return pafs.LocalFileSystem()
    kwargs: dict = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS)}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        if endpoint.startswith("http://"):
            kwargs["scheme"] = "http"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)
