"""Logging set-up (named logs.py, not logging.py, so it never shadows the stdlib module).

Destinations, decided by mount.py:

    --log-file PATH         timestamped lines in PATH (reopened when logrotate moves it)
    foreground              timestamped lines on stderr
    foreground, systemd     "<N>name: message" on stderr: journald reads the <N> syslog
                            priority and adds its own timestamps (sd-daemon(3))
    daemon                  syslog (/dev/log, facility daemon); journald collects it too

Never logged: credentials, signatures, presigned URLs. botocore's own debug log prints request
headers, so its loggers stay at WARNING; every handler also runs `Redact`, which masks
anything shaped like a signature or a security token should one reach a message anyway.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "s3mpfs[%(process)d]: %(levelname)s %(name)s: %(message)s"

_SECRET = re.compile(
    r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?|signature=|credential="
    r"|x-amz-security-token[\"']?\s*[:=]\s*[\"']?|aws_secret_access_key[\"']?\s*[:=]\s*[\"']?"
    r"|aws_session_token[\"']?\s*[:=]\s*[\"']?)[^\s&\"',;]+")
# SSE-C keys (--sse-c-key-file) by header or boto3 parameter name; a bytes repr up to its quote.
_SSE_C_KEY = re.compile(
    r"(?i)((?:x-amz-(?:copy-source-)?server-side-encryption-customer-key(?:-md5)?"
    r"|(?:CopySource)?SSECustomerKey(?:MD5)?)[\"']?\s*[:=]\s*)"
    r"(b'(?:\\.|[^'\\])*'|b\"(?:\\.|[^\"\\])*\"|[\"']?[^\s&\"',;]+)")


class Redact(logging.Filter):
    """Mask signature-like values in a record's final message (defence in depth)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _SECRET.search(message) or _SSE_C_KEY.search(message):
            message = _SECRET.sub(r"\1<redacted>", message)
            record.msg, record.args = _SSE_C_KEY.sub(r"\1<redacted>", message), None
        return True


def syslog_priority(levelno: int) -> int:
    """logging level -> syslog priority (journald's <N> prefix)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """`<N>` before every line (a traceback keeps its priority line by line), no timestamp:
    the journal stamps each line itself."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def setup_logging(*, debug: bool, log_file: str | None, daemon: bool,
                  journal: bool = False, echo_warnings: bool = False) -> None:
    """Replace the root logger's handlers. Raises OSError if log_file cannot be opened.

    echo_warnings: also show warnings on stderr (start-up with --log-file before
    daemonising: a warning about the mountpoint should reach the terminal too)."""
    handler: logging.Handler
    if log_file:
        handler = logging.handlers.WatchedFileHandler(log_file)
        handler.setFormatter(logging.Formatter(FORMAT))
    elif daemon and os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    elif daemon:
        handler = logging.NullHandler()
    elif journal:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(Redact())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    if echo_warnings:
        terminal = logging.StreamHandler(sys.stderr)
        terminal.setLevel(logging.WARNING)
        terminal.setFormatter(logging.Formatter("s3mpfs: %(levelname)s: %(message)s"))
        terminal.addFilter(Redact())
        root.addHandler(terminal)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # botocore's debug log prints request headers (signatures, tokens) and bodies: never on.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
