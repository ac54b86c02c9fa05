"""HeadObject without boto3's per-call machinery, for the HEADs that come by the thousand.

A first `ls -l` (or rsync's comparison) of a directory HEADs every object in it, so that the
kernel is shown stored modes, owners and times. boto3's head_object costs ~2 ms of CPU per call
(parameter validation, endpoint rules, ~20 events, the generic response parser); under the GIL
that was the whole cost of `ls -l` of 10,000 objects (~40 s on Ceph here). This path signs with
botocore's own S3 SigV4 signer and sends on the client's own HTTP session (its connection pool,
TLS settings, proxies and timeouts), and reads the few headers BotoStore.head uses: about half
the CPU, ~1.7x faster listings (README, benchmarks).

It answers only what it is sure of: 200 (parsed into head_object's result shape) and 404 (raised
as botocore's ClientError, so errors are still mapped in one place, boto._map_errors). Any other
status (a region redirect, 400, 403, 5xx) returns None and BotoStore repeats the request through
boto3, which knows those cases. Used only with an endpoint URL (path-style addressing, where the
URL is plain) and without SSE-C; on AWS's own endpoints boto3 resolves the bucket's host.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import logging
import time
from typing import Any
from urllib.parse import quote

import botocore.auth
import botocore.awsrequest
import botocore.exceptions
import botocore.utils

log = logging.getLogger("s3mpfs.s3")

_META = "x-amz-meta-"
# head_object's result members that BotoStore reads, by header.
_HEADERS = {
    "content-type": "ContentType",
    "x-amz-storage-class": "StorageClass",
    "cache-control": "CacheControl",
    "content-disposition": "ContentDisposition",
    "content-encoding": "ContentEncoding",
    "content-language": "ContentLanguage",
    **{f"x-amz-checksum-{a.lower()}": f"Checksum{a}"
       for a in ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1")},
}


def parse_timestamp(value: str) -> datetime.datetime:
    """S3's timestamps: ISO 8601 in XML, HTTP dates in headers. botocore parses both with
    dateutil, ~20 % of the daemon's time in `ls -l` of 10,000 keys; these two forms need only
    the standard library. Anything else goes to botocore's parser."""
    try:
        return datetime.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return botocore.utils.parse_timestamp(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


class QuickHeads:
    def __init__(self, client: Any, bucket: str, endpoint_url: str | None) -> None:
        self._client = client
        self._base = f"{endpoint_url.rstrip('/')}/{bucket}/" if endpoint_url else None
        self._region = client.meta.region_name

    @property
    def enabled(self) -> bool:
        return self._base is not None

    def head(self, key: str) -> dict[str, Any] | None:
        """head_object(Bucket, Key, ChecksumMode=ENABLED)'s result, raises its 404, or None:
        ask boto3."""
        assert self._base is not None
        # The client's own credentials object: it refreshes temporary credentials itself.
        credentials = self._client._request_signer._credentials
        if credentials is None:
            return None  # unsigned requests: boto3 knows how
        request = botocore.awsrequest.AWSRequest(
            method="HEAD", url=self._base + quote(key, safe="/~"),
            headers={"x-amz-checksum-mode": "ENABLED"})
        botocore.auth.S3SigV4Auth(credentials.get_frozen_credentials(), "s3",
                                  self._region).add_auth(request)
        t0 = time.monotonic()
        response = self._client._endpoint.http_session.send(request.prepare())
        status = response.status_code
        if log.isEnabledFor(logging.DEBUG):
            log.debug("S3 HeadObject %s: HTTP %s in %.3f s", key, status, time.monotonic() - t0)
        if status == 404:
            answer: Any = {"Error": {"Code": "404", "Message": "Not Found"},
                           "ResponseMetadata": {"HTTPStatusCode": 404}}
            raise botocore.exceptions.ClientError(answer, "HeadObject")
        if status != 200:
            return None
        try:
            return _result(response.headers)
        except (KeyError, ValueError, TypeError, OverflowError):
            return None  # a header missing or malformed: let boto3 judge the answer


def _result(headers: Any) -> dict[str, Any]:
    r: dict[str, Any] = {
        "ContentLength": int(headers["content-length"]),
        "ETag": headers["etag"],
        "LastModified": parse_timestamp(headers["last-modified"]),
        # As botocore: the name after the prefix as the server sent it.
        "Metadata": {name[len(_META):]: value for name, value in headers.items()
                     if name.lower().startswith(_META)},
    }
    for header, member in _HEADERS.items():
        value = headers.get(header)
        if value is not None:
            r[member] = value
    expires = headers.get("expires")
    if expires is not None:  # as botocore: a date, left out when it is not one
        with contextlib.suppress(ValueError, RuntimeError, OverflowError):
            r["Expires"] = parse_timestamp(expires)
    return r
