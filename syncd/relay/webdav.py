"""A relay on a WebDAV collection (RFC 4918), over httpx: PROPFIND to list, GET, one PUT per
object, DELETE, MKCOL for the parent collections a PUT needs.

Listing walks with `Depth: 1`, one request per collection: servers commonly refuse
`Depth: infinity` (Apache's default), and the relay's tree is shallow. Names with a segment
that begins with a dot are the server's or the relay's own (the marker, Apache's
`.davfs.tmp*` files that hold a PUT in progress, `.DAV`) and are never listed.

A PUT is atomic on servers that write to a temporary file and rename it, as Apache's
mod_dav_fs does; an interrupted PUT there leaves nothing. No collection is ever created
without first finding the marker, so a share whose disk is not mounted on the server is
not filled."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote

import httpx

from syncd.relay.storage import MARKER, Denied, Full, Missing, RelayError, Unreachable, check_name

TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=30.0, pool=30.0)
_PROPFIND = (b'<?xml version="1.0" encoding="utf-8"?>'
             b'<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/></D:prop></D:propfind>')
_DAV = "{DAV:}"


class WebDAV:
    def __init__(self, url: str, username: str | None, password: str | None, *,
                 timeout: httpx.Timeout = TIMEOUT):
        parsed = httpx.URL(url)
        if parsed.userinfo:
            raise ValueError("the URL must not carry a user or password")
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self._root = parsed.copy_with(path=parsed.path.rstrip("/") + "/", query=None,
                                      fragment=None)
        auth = httpx.BasicAuth(username, password or "") if username is not None else None
        # Idle connections are dropped here before servers commonly drop theirs (Apache
        # after 5 s), so that a request rarely meets a connection closing under it.
        self._client = httpx.AsyncClient(auth=auth, timeout=timeout, follow_redirects=False,
                                         limits=httpx.Limits(keepalive_expiry=2.0))

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- the Storage interface

    async def check(self) -> None:
        await self._check_root()
        marker = await self._request("HEAD", MARKER, ok=(200, 404))
        if marker.status_code == 404:
            raise Unreachable(f"{self.url}: no {MARKER} in the collection: not a relay, or "
                              "its storage is not mounted on the server")

    async def list(self, prefix: str) -> list[str]:
        check_name(prefix)
        names: list[str] = []
        pending = [prefix]
        while pending:
            collection = pending.pop()
            answer = await self._propfind(collection + "/", "1", ok=(207, 400, 404, 409))
            if answer.status_code != 207:  # no collection there (400: Apache, for a file)
                if collection == prefix:
                    await self.check()  # nothing under prefix yet, or no relay at all
                continue
            for name, is_collection in self._members(answer, collection):
                (pending if is_collection else names).append(name)
        return sorted(names)

    async def get(self, name: str) -> bytes:
        answer = await self._request("GET", check_name(name), ok=(200, 404))
        if answer.status_code == 404:
            await (self._check_root() if name == MARKER else self.check())
            raise Missing(f"{self.url}: no object {name}")
        return answer.content

    async def put(self, name: str, data: bytes) -> None:
        check_name(name)
        if name == MARKER:
            await self._check_root()  # the marker makes a relay of a collection that exists
        elif "/" not in name:
            await self.check()  # a file in the root is the one write that needs no parent
        answer = await self._request("PUT", name, content=data, ok=(200, 201, 204, 409))
        if answer.status_code == 409:  # a parent collection is missing
            await self.check()
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                await self._request("MKCOL", "/".join(parts[:depth]) + "/", ok=(201, 405))
            await self._request("PUT", name, content=data, ok=(200, 201, 204))

    async def delete(self, name: str) -> None:
        answer = await self._request("DELETE", check_name(name), ok=(200, 204, 404))
        if answer.status_code == 404:
            await self.check()

    # -- HTTP

    async def _check_root(self) -> None:
        root = await self._propfind("", "0", ok=(207, 404, 409))
        if root.status_code != 207:
            raise Unreachable(f"{self.url}: the relay's collection does not exist")

    async def _propfind(self, name: str, depth: str, ok: tuple[int, ...]) -> httpx.Response:
        return await self._request("PROPFIND", name, ok, content=_PROPFIND, headers={
            "Depth": depth, "Content-Type": "application/xml; charset=utf-8"})

    async def _request(self, method: str, name: str, ok: tuple[int, ...],
                       **kw) -> httpx.Response:
        """One request for `name` below the root; any status not in `ok` raises the
        RelayError it means."""
        url = self._root.copy_with(path=self._root.path + quote(name))
        try:
            try:
                answer = await self._client.request(method, url, **kw)
            except httpx.RemoteProtocolError:
                # closed without an answer: most often a kept-alive connection that the
                # server closed as the request went out. Every request here is idempotent.
                answer = await self._client.request(method, url, **kw)
        except httpx.TimeoutException as e:
            raise Unreachable(f"{self.url}: no answer in time ({type(e).__name__})") from e
        except httpx.TransportError as e:
            raise Unreachable(f"{self.url}: cannot reach the server: {e or type(e).__name__}"
                              ) from e
        status = answer.status_code
        if status in ok:
            return answer
        where = f"{method} {url.path}"
        if status in (401, 403):
            raise Denied(f"{self.url}: the server refused the user name or password "
                         f"(HTTP {status} for {where})")
        if status in (413, 507):
            raise Full(f"{self.url}: the server has no room (HTTP {status} for {where})")
        hint = " (is it a WebDAV collection?)" if status == 405 else ""
        raise RelayError(f"{self.url}: unexpected HTTP {status} for {where}{hint}")

    def _members(self, answer: httpx.Response, collection: str) -> list[tuple[str, bool]]:
        """(name, is a collection) for each member a Depth: 1 PROPFIND of `collection`
        found, without the collection itself and the hidden names."""
        try:
            tree = ET.fromstring(answer.content)
        except ET.ParseError as e:
            raise RelayError(f"{self.url}: the server's listing of {collection}/ is not "
                             f"XML: {e}") from e
        base = self._root.path + collection + "/"
        members = []
        for response in tree.iter(_DAV + "response"):
            href = response.findtext(_DAV + "href") or ""
            path = httpx.URL(href.strip()).path  # absolute URL or path, decoded
            if not path.startswith(base) or path.rstrip("/") + "/" == base:
                continue
            segment = path[len(base):].rstrip("/")
            if "/" in segment or segment.startswith(".") or not segment:
                continue
            try:
                name = check_name(f"{collection}/{segment}")
            except ValueError:
                continue  # not ours: a name no relay object has
            members.append((name, response.find(f".//{_DAV}collection") is not None))
        return members
