"""A relay's Storage from its URL: `file:///PATH` is a directory, `https://` and `http://`
a WebDAV collection (syncd/relay/webdav.py); each loads only when used (the commands
that only check a URL need neither trio nor httpx).

WebDAV credentials never come from the command line: they are read, when the relay is
opened, from the environment (SYNCD_RELAY_<NAME>_USER and SYNCD_RELAY_<NAME>_PASSWORD,
NAME upper-cased with every character not A-Z or 0-9 as `_`), else from the file given to
`syncd relay add --credentials FILE`: one line `USER:PASSWORD`, mode 0600 advised.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from syncd.relay.storage import Storage


class BadRelay(ValueError):
    """A relay URL or credentials that cannot be used; str() says why and what to write."""


def check_url(url: str) -> str:
    """The URL as stored: file:///ABSOLUTE/PATH or http(s)://HOST[:PORT]/PATH, without a
    trailing slash and without credentials."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise BadRelay(f"bad relay URL {url!r}: a directory is file:///ABSOLUTE/PATH")
        path = unquote(parts.path).rstrip("/") or "/"
        return Path(path).as_uri()
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise BadRelay(f"bad relay URL {url!r}: no host")
        if parts.username is not None or parts.password is not None:
            raise BadRelay(f"bad relay URL {url!r}: credentials go in a file (--credentials "
                           "FILE) or the environment, never in the URL")
        if parts.query or parts.fragment:
            raise BadRelay(f"bad relay URL {url!r}: no query or fragment")
        return url.rstrip("/")
    raise BadRelay(f"bad relay URL {url!r}: want file:///PATH (a directory) or "
                   "https://HOST/PATH (WebDAV)")


def env_prefix(name: str) -> str:
    return "SYNCD_RELAY_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_"


def credentials(name: str, file: str | None) -> tuple[str | None, str | None]:
    """(user, password) for relay `name`: the environment's, else the file's, else none."""
    prefix = env_prefix(name)
    user, password = os.environ.get(prefix + "USER"), os.environ.get(prefix + "PASSWORD")
    if user is not None or password is not None or file is None:
        return user, password
    try:
        line = Path(file).read_text().strip()
    except OSError as e:
        raise BadRelay(f"cannot read the credentials of relay {name} from {file}: "
                       f"{e.strerror}") from None
    user, colon, password = line.partition(":")
    if not colon or "\n" in line:
        raise BadRelay(f"{file}: want one line USER:PASSWORD")
    return user, password


def open_storage(name: str, url: str, credentials_file: str | None = None) -> Storage:
    """The Storage for a relay as stored (check_url); BadRelay when it cannot be built."""
    if url.startswith("file:"):
        from syncd.relay.directory import Directory

        return Directory(unquote(urlsplit(url).path))
    user, password = credentials(name, credentials_file)
    from syncd.relay.webdav import WebDAV  # httpx-based; only when a relay uses it

    try:
        return WebDAV(url, user, password)
    except ValueError as e:
        raise BadRelay(f"relay {name}: {e}") from None
