"""systemd integration without a dependency: sd_notify(3), and "are we run by systemd?".

`notify()` sends one datagram to $NOTIFY_SOCKET: a filesystem path, or "@name" for Linux's
abstract socket namespace. Outside systemd it does nothing, and it never raises: a mount must
not fail because its supervisor's socket went away.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", several lines "A=1\\nSTATUS=...") to the service
    manager; True if a datagram went out."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace: a leading NUL instead of the "@"
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("NOTIFY_SOCKET=%s: only AF_UNIX sockets are supported", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("could not notify the service manager (%s): %s",
                    state.partition("\n")[0], exc)
        return False
    return True


def journal_stream(fd: int = 2) -> bool:
    """Is `fd` (stderr) connected to the journal? systemd sets JOURNAL_STREAM=DEV:INODE of the
    stream it connected; comparing it with fstat(fd) tells a service's own stderr from one a
    child inherited after redirecting it (systemd.exec(5), "JOURNAL_STREAM")."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def under_systemd(fd: int = 2) -> bool:
    """Run as a systemd service: the notify socket is set, or stderr goes to the journal."""
    return bool(os.environ.get("NOTIFY_SOCKET")) or journal_stream(fd)
