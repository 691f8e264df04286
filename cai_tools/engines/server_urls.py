"""Server URLs as users give them (``--server URL``, ``--server @FILE``, ``-m URL``): checked, and
never shown with their secrets.

A URL is printed in notes and errors and recorded in provenance, so a password in it
(``user:password@``) and the values of its query string (``?api_key=...``) are masked wherever it
is shown; they are still sent to the server (as Basic auth, and with every request).
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from pathlib import Path
from typing import Sequence

from ..errors import InputError, UsageError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_USERINFO = re.compile(r"(^[A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
_QUERY_VALUE = re.compile(r"([?&][^=&#]*=)[^&#]*")


def is_url(text: str | None) -> bool:
    """Whether ``text`` is written as a URL (``scheme://...``), of any scheme."""
    return bool(text) and bool(_SCHEME.match(text))


def masked(url: str) -> str:
    """``url`` as it may be shown: credentials and query values replaced by ``***`` (works on
    any string, even one that does not parse as a URL)."""
    return _QUERY_VALUE.sub(r"\1***", _USERINFO.sub(r"\1***@", url))


def check_server_url(url: str, what: str = "--server") -> str:
    """``url`` stripped, when it is an http(s) URL with a host and a valid port; otherwise a one-line
    UsageError saying why, the URL masked."""
    url = url.strip()
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port   # a port out of range or not a number raises here
    except ValueError as exc:
        raise UsageError(f"{what} {masked(url)}: not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not is_url(url):
        raise UsageError(f"{what} {masked(url)}: a server's URL starts with http:// or https://")
    if not parts.hostname:
        raise UsageError(f"{what} {masked(url)}: the URL names no host")
    return url


def server_urls(values: Sequence[str] | str) -> list[str]:
    """--server values, checked: URLs, or @FILE naming a UTF-8 file of URLs (one per line, #
    comments); an error names the value, or the file and line."""
    urls: list[str] = []
    for value in [values] if isinstance(values, str) else values:
        if not value.startswith("@"):
            urls.append(check_server_url(value))
            continue
        path = Path(value[1:])
        try:
            lines = path.read_bytes().decode("utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the server list: {exc.strerror}", where=str(path)) from None
        except UnicodeDecodeError as exc:
            raise InputError(f"the server list is not UTF-8 text (byte {exc.start})", where=str(path)) from None
        found = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(lines, start=1)]
        found = [(n, url) for n, url in found if url]
        if not found:
            raise InputError("the server list names no URL", where=str(path))
        for n, url in found:
            try:
                urls.append(check_server_url(url, "a server"))
            except UsageError as exc:
                raise InputError(exc.message, where=f"{path}:{n}") from None
    return urls


def split_url(url: str) -> tuple[str, str | None, str]:
    """(the URL without ``user:password@``, query string or fragment; a Basic auth header value or
    None; the query string, sent with every request): what is left may be printed and recorded."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    auth = None
    if parts.username is not None or parts.password is not None:
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    bare = urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path, "", ""))
    return bare, auth, parts.query


def normalise_base_url(url: str) -> str:
    """``http://host:8080``, ``http://host:8080/`` and ``http://host:8080/v1`` all give
    ``http://host:8080/v1``."""
    url = url.strip().rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"
