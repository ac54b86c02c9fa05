"""S3 request logging through botocore's event hooks on our client.

    WARNING  every retry (BotoStore retries itself and logs through this logger; a client made
             with attempts > 1 for a script is logged here from botocore's own retries):
             "S3 UploadPart big.bin part 3: retrying (attempt 2 of 5) after HTTP 503 SlowDown"
    DEBUG    every HTTP attempt (with --debug):
             "S3 PutObject notes.txt: HTTP 200 in 0.013 s"

What is logged: the operation, the key (and part number), the HTTP status and error code or
the exception's class, the duration. Never headers, never URLs with their query strings (a
presigned URL carries its signature there), never request or response bodies.

Events (botocore/client.py, endpoint.py): before-parameter-build carries the API parameters
(the key); request-created fires for every attempt, with the attempt number in the request
context (so attempt > 1 is a retry, logged when it starts, after botocore's back-off);
response-received fires after every attempt with its response or exception.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

log = logging.getLogger("s3mpfs.s3")

_LABEL = "s3mpfs_label"
_T0 = "s3mpfs_t0"
_CAUSE = "s3mpfs_cause"
_QUERY = re.compile(r"\?[^\s\"']*")


def _on_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    what = str(params.get("Key") or params.get("Prefix") or params.get("Bucket") or "")
    if "PartNumber" in params:
        what += f" part {params['PartNumber']}"
    context[_LABEL] = what


def _on_attempt(request: Any, operation_name: str, **_: Any) -> None:
    context = getattr(request, "context", None)
    if not isinstance(context, dict):
        return
    context[_T0] = time.monotonic()
    retries = context.get("retries") or {}
    attempt = int(retries.get("attempt", 1))
    if attempt > 1:
        retry_config = getattr(context.get("client_config"), "retries", None)
        total = retry_config.get("total_max_attempts") if isinstance(retry_config, dict) else None
        of = f" of {total}" if total else ""
        log.warning("S3 %s %s: retrying (attempt %d%s) after %s", operation_name,
                    context.get(_LABEL, ""), attempt, of, context.get(_CAUSE, "an error"))


def strip_query(text: str) -> str:
    """Drop URL query strings (a presigned URL carries its signature there)."""
    return _QUERY.sub("", text)


def describe(response_dict: dict[str, Any] | None, parsed: dict[str, Any] | None,
             exception: BaseException | None) -> str:
    """'HTTP 503 SlowDown', 'HTTP 200', or 'ConnectionClosedError: ...' without queries."""
    if exception is not None:
        return f"{type(exception).__name__}: {_QUERY.sub('', str(exception))}"
    status = (response_dict or {}).get("status_code", "?")
    code = ((parsed or {}).get("Error") or {}).get("Code", "")
    return f"HTTP {status} {code}".rstrip()


def _on_response(response_dict: dict[str, Any] | None, parsed_response: Any,
                 context: dict[str, Any], exception: BaseException | None,
                 **kwargs: Any) -> None:
    parsed = parsed_response if isinstance(parsed_response, dict) else None
    cause = describe(response_dict, parsed, exception)
    context[_CAUSE] = cause
    if log.isEnabledFor(logging.DEBUG):
        t0 = context.get(_T0)
        took = f" in {time.monotonic() - t0:.3f} s" if t0 is not None else ""
        event = str(kwargs.get("event_name", ""))
        operation = event.rsplit(".", 1)[-1] if event else "request"
        log.debug("S3 %s %s: %s%s", operation, context.get(_LABEL, ""), cause, took)


def install(client: Any) -> None:
    """Register the hooks on a boto3 S3 client (its own event system, no global state)."""
    events = client.meta.events
    events.register("before-parameter-build.s3", _on_params, unique_id="s3mpfs-log-params")
    events.register("request-created.s3", _on_attempt, unique_id="s3mpfs-log-attempt")
    events.register("response-received.s3", _on_response, unique_id="s3mpfs-log-response")
