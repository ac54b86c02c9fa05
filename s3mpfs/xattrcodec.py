"""Extended attributes in one x-amz-meta-xattr header, encoded exactly as s3fs-fuse does.

s3fs-fuse (src/s3fs.cpp: build_xattrs / parse_xattrs, string_util.cpp: urlEncodePath,
s3fs_base64) stores every xattr of an object in one user-metadata header:

    x-amz-meta-xattr: urlEncodePath('{"NAME":"BASE64(VALUE)","NAME2":"..."}')

the names in byte order (a std::map), the values in standard base64 with '=' padding, and the
whole text percent-encoded (upper-case hex) except ASCII letters, digits and ``.-_~/``. An
empty map is written as ``{}`` (``%7B%7D``). Reading, s3fs percent-decodes the header, takes
the text between the first '{' and the last '}', splits it at every ',', splits each pair at
its first ':' and strips the double quotes; a pair that does not parse is skipped.

That format cannot hold a name with ',', ':' or '"'. s3fs would write such a name and then
misread it; here those three characters and '%' are percent-encoded inside the name (so a
name without them, which is every name in practice, is byte for byte what s3fs writes), and
decoded again on reading. Names are bytes decoded as UTF-8 with surrogateescape.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse

HEADER = "xattr"  # x-amz-meta-xattr
_SAFE = ".-_~/"  # urlEncodePath keeps these (and ASCII letters and digits)
_NAME_ESCAPES = {"%": "%25", ",": "%2C", ":": "%3A", '"': "%22"}
_NAME_UNESCAPES = {v: k for k, v in _NAME_ESCAPES.items()}


def _raw(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _escape_name(name: str) -> str:
    return "".join(_NAME_ESCAPES.get(c, c) for c in name)


def _unescape_name(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        code = text[i:i + 3].upper()
        if code in _NAME_UNESCAPES:
            out.append(_NAME_UNESCAPES[code])
            i += 3
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def encode(xattrs: dict[str, bytes]) -> str:
    """The header value for xattrs (s3fs's build_xattrs)."""
    pairs = []
    for name in sorted(xattrs, key=_raw):
        value = base64.b64encode(xattrs[name]).decode("ascii")
        pairs.append(f'"{_escape_name(name)}":"{value}"')
    text = "{" + ",".join(pairs) + "}"
    return urllib.parse.quote(text.encode("utf-8", "surrogateescape"), safe=_SAFE)


def decode(header: str) -> dict[str, bytes]:
    """xattrs from the header value (s3fs's parse_xattrs); what does not parse is skipped."""
    raw = urllib.parse.unquote_to_bytes(header).decode("utf-8", "surrogateescape")
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        return {}
    out: dict[str, bytes] = {}
    for pair in raw[start + 1:end].split(","):
        raw_name, sep, raw_value = pair.partition(":")
        name, value = _unquote(raw_name), _unquote(raw_value)
        if not sep or name is None or value is None:
            continue
        try:
            out[_unescape_name(name)] = base64.b64decode(value + "=" * (-len(value) % 4))
        except (binascii.Error, ValueError):
            continue
    return out


def _unquote(text: str) -> str | None:
    """s3fs's takeout_str_dquart: the text between the first and the last '"'."""
    first = text.find('"')
    if first < 0:
        return text
    last = text.rfind('"')
    if last <= first:
        return None
    inner = text[first + 1:last]
    return None if '"' in inner else inner
