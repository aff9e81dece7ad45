"""The peer API (docs/protocol.md): a FastAPI app behind a signing layer.

Every body is validated against the models below (one that is not JSON gets 400, one
that fails the models 422, and neither reaches the index; each refusal is logged once, its
`detail` one line that never echoes the input): by FastAPI, but a push's by pydantic from
its bytes (_validated). FastAPI publishes the OpenAPI description at /openapi.json.
Handlers are async and run on the trio thread, where every SQLite call of the process
runs (DESIGN, "Where things run"). `Signed` wraps the app: it refuses
unsigned, stale or replayed requests with 401 before any handler sees them, and signs
every response (rule 7).
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import logging
import re
import sqlite3
from typing import Annotated, Literal, Protocol

import trio
from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from syncd import auth, compress
from syncd.index import chunklist
from syncd.index.catalog import XATTR_NAME_MAX, XATTR_SIZE_MAX, XATTR_STATE_MAX, check_name
from syncd.index.chunklist import MAX_FILE_SIZE, digest_of, file_hash
from syncd.metrics import BYTES_RECEIVED, BYTES_SENT

log = logging.getLogger(__name__)

MAX_BODY = 64 << 20
MAX_BATCH = 1000
# A file's bytes may travel inside its state (`data`) up to this size, whatever the
# sender's INLINE_MAX (index/inline.py); a batch carries at most states.BATCH_DATA of them.
MAX_DATA = 64 << 10
MAX_CHUNKS = 64  # per batch request: at most 64 MiB of chunks in one response
SEND_SLICE = 1 << 20  # bytes of a response body handed to TLS at a time
BIG_BODY = 64 << 10  # bytes: a body this large is hashed and packed on a worker thread

DeviceId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
NODE_ID = r"^(root|[0-9a-f]{32}:[0-9]{1,19})$"


def _counter_below_limit(node: str) -> str:
    """A node id's counter is a Counter (below 2**62), up to 19 digits."""
    if int(node.partition(":")[2] or 0) >= 1 << 62:
        raise ValueError("the counter of a node id must be below 2**62")
    return node


NodeId = Annotated[str, StringConstraints(pattern=NODE_ID), AfterValidator(_counter_below_limit)]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Counter = Annotated[int, Field(ge=0, lt=1 << 62)]
# `inline=1`: the caller reads states that carry small files' bytes (`data`); a peer of an
# older version, whose models refuse that field, does not ask. `xattr=1` likewise: states
# carry extended attributes (`xattr`).
Inline = Annotated[bool, Query()]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Version(Strict):
    vv: dict[DeviceId, Counter]
    made: dict[DeviceId, Counter] | None = None  # the vector its data was made at; vv if absent
    clock: Counter
    device: DeviceId | None


def _decoded(v: str, limit: int, what: str) -> bytes:
    """The bytes `v` is base64 of, when there are at most `limit`, else ValueError.
    (binascii's strict mode refuses what b64decode(validate=True) does, without its
    regular expression over the text first, which cost as much as the decoding.)"""
    try:
        data = binascii.a2b_base64(v, strict_mode=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None
    if len(data) > limit:
        raise ValueError(f"{what} is more than {limit} bytes")
    return data


def _base64_at_most(v: str | None, limit: int, what: str) -> str | None:
    """`v` when it is None or base64 of at most `limit` bytes, else ValueError."""
    if v is not None:
        _decoded(v, limit, what)
    return v


DATA_TEXT = -(-MAX_DATA // 3) * 4  # characters of base64 for MAX_DATA bytes


def _data(v: object) -> object:
    """A state's `data`, decoded here once: the check of its hash and the index take
    these bytes (the text was decoded three times per state before)."""
    if not isinstance(v, str):
        return v  # pydantic refuses anything but bytes
    if len(v) > DATA_TEXT:
        raise ValueError(f"data is more than {MAX_DATA} bytes")
    return _decoded(v, MAX_DATA, "data")


# On the wire, base64 text of at most MAX_DATA bytes (described so); validated, the bytes.
Data = Annotated[bytes, BeforeValidator(_data),
                 WithJsonSchema({"type": "string", "maxLength": DATA_TEXT})]


class ContentVersion(Version):
    hash: Annotated[str, StringConstraints(pattern=r"^blake3:[0-9a-f]{64}$")] | None
    size: Annotated[int, Field(ge=0, le=MAX_FILE_SIZE)]
    mtime_ns: Annotated[int, Field(ge=-(1 << 62), lt=1 << 62)]
    chunks: Annotated[list[Hex64], Field(max_length=1 << 20)]
    target: Annotated[str, StringConstraints(max_length=8192)] | None
    # A small file's bytes, base64 (docs/protocol.md): the receiver has them at once.
    data: Data | None = None

    @field_validator("target")
    @classmethod
    def _base64(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                base64.b64decode(v, validate=True)
            except binascii.Error:
                raise ValueError("target is not base64") from None
        return v


class ModeVersion(Version):
    mode: Annotated[int, Field(ge=0, le=0o7777)]


def _xattr_name(name: str) -> str:
    """A user.* name the mount could have made: UTF-8, no NUL, at most XATTR_NAME_MAX
    bytes, not one of the virtual user.syncd.* attributes."""
    if not name.startswith("user.") or name.startswith("user.syncd.") or "\0" in name \
            or len(name.encode("utf-8", "surrogatepass")) > XATTR_NAME_MAX or \
            len(name) <= len("user."):
        raise ValueError(f"bad extended attribute name {name[:80]!r}")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise ValueError("an extended attribute name is UTF-8") from None
    return name


class XattrEntry(Strict):
    # base64 of at most XATTR_SIZE_MAX bytes; null: removed
    value: Annotated[str, StringConstraints(max_length=-(-XATTR_SIZE_MAX // 3) * 4)] | None
    clock: Counter
    device: DeviceId

    @field_validator("value")
    @classmethod
    def _value(cls, v: str | None) -> str | None:
        return _base64_at_most(v, XATTR_SIZE_MAX, "an extended attribute's value")


class XattrVersion(Version):
    attrs: dict[Annotated[str, AfterValidator(_xattr_name)], XattrEntry]

    @model_validator(mode="after")
    def _total(self) -> XattrVersion:
        total = sum(len(n.encode()) + (0 if e.value is None else len(base64.b64decode(e.value)))
                    for n, e in self.attrs.items())
        if total > XATTR_STATE_MAX:
            raise ValueError(f"extended attributes of more than {XATTR_STATE_MAX} bytes")
        return self


class NodeState(Strict):
    id: NodeId
    kind: Literal["file", "dir", "symlink"]
    parent: NodeId | None
    name: str
    deleted: bool
    conflict_of: NodeId | None
    content: ContentVersion
    mode: ModeVersion
    place: Version
    xattr: XattrVersion | None = None  # absent from a peer of an older version

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        """One path component that stays inside its directory (rule 7)."""
        try:
            return check_name(v)
        except OSError as e:
            raise ValueError(f"bad name {v[:80]!r}: {e.strerror}") from None

    @model_validator(mode="after")
    def _content(self) -> NodeState:
        """Content that can be installed as it is described (DESIGN, "The content store"):
        a live file is its chunk list, slots of 1 MiB but the last (index/chunklist.py),
        hashed as a list (the hash decides conflicts, so it must be the list's); a live
        symlink has a target; nothing else has chunks. The list is made canonical here,
        so that what the rules compare is: a peer of an older version sends zero chunks,
        which are holes."""
        c = self.content
        if self.kind == "file" and not self.deleted:
            if c.hash != file_hash(b"".join(bytes.fromhex(h) for h in c.chunks)):
                raise ValueError("content.hash is not the hash of content.chunks")
            chunks = chunklist.ChunkList.from_hex(c.chunks, c.size)
            c.chunks, c.hash = chunks.hex(), chunks.hash
            if c.data is not None and not _is_content(c.data, chunks):
                # verified before anything is installed (rule 2): the push changes nothing
                raise ValueError("content.data is not the one chunk that content.chunks "
                                 "names")
        elif c.chunks or c.data is not None:
            raise ValueError(f"a {'deleted ' if self.deleted else ''}{self.kind} has no "
                             "chunks or data")
        if self.kind == "symlink" and not self.deleted:
            target = base64.b64decode(c.target) if c.target is not None else b""
            if not target or b"\0" in target:
                raise ValueError("a symlink's target is 1 or more bytes, none of them NUL")
        if self.kind == "symlink" and self.xattr is not None and self.xattr.attrs:
            raise ValueError("a symlink has no extended attributes (Linux allows user.* on "
                             "files and directories only)")
        return self


def _is_content(data: bytes, chunks: chunklist.ChunkList) -> bool:
    """Are `data` all of a file made of `chunks`: its one chunk (not a hole)?"""
    digest = chunks.at(0)
    return chunks.slots == 1 and digest is not None and digest_of(data) == digest


class Changes(Strict):
    device: DeviceId
    changes: Annotated[list[NodeState], Field(max_length=MAX_BATCH)]


class ChunkList(Strict):
    chunks: Annotated[list[Hex64], Field(min_length=1, max_length=MAX_CHUNKS)]


class HoldList(Strict):
    chunks: Annotated[list[Hex64], Field(min_length=1, max_length=MAX_BATCH)]


Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class LeaseList(Strict):
    chunks: Annotated[list[Hex64], Field(min_length=1, max_length=MAX_BATCH)]
    seconds: Annotated[float, Field(gt=0, le=600)]


class Hello(Strict):
    device: DeviceId
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{1,64}$")]
    fingerprint: Fingerprint  # the caller's certificate
    server: Fingerprint | None  # the certificate it expects of us; None: not pinned yet


class NewKey(Strict):
    key: Hex64  # the cluster's new key, 64 hex digits


class Unproven(PermissionError):
    """A hello without a certificate in the name of a device whose certificate is pinned
    here: refused (403), and logged as news only, since a pairing in which that device
    pinned us first brings one (its client then says hello presenting it)."""


class PeerService(Protocol):
    """What this process serves its peers from: the daemon (syncd/daemon.py)."""

    def hello(self, device: str, name: str, fingerprint: str, server: str | None
              ) -> dict: ...  # PermissionError (Unproven among them): refused
    def admit(self, method: str, path: str) -> str | None: ...  # why refused, or None
    def caller(self) -> str | None: ...  # the device of this connection's certificate
    def take_key(self, key: bytes) -> None: ...
    def receive(self, device: str, states: list[dict]) -> int: ...  # `data`: bytes
    def changes_since(self, since: int, limit: int, inline: bool, xattr: bool
                      ) -> tuple[list[dict], int]: ...
    def read_inline(self, digests: list[bytes]) -> dict[bytes, bytes]: ...  # SQLite
    def read_chunk(self, digest: bytes) -> bytes | None: ...  # on a worker thread: no SQLite
    def hold(self, digests: list[bytes]) -> int: ...
    def lease(self, digests: list[bytes], seconds: float) -> list[bytes]: ...
    def state_of(self, node: str, inline: bool, xattr: bool) -> dict | None: ...


def build_app(service: PeerService) -> FastAPI:
    app = FastAPI(title="syncd peer API", version="1", docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """400 for a body that is not a JSON object, 422 for one that fails the models;
        `detail` is one line naming each field and what is wrong with it, never the input
        (it may be huge, or not even encodable: lone surrogates)."""
        errors = exc.errors()
        malformed = any(e["type"] == "json_invalid" or tuple(e["loc"]) == ("body",)
                        for e in errors)
        detail = "; ".join(_describe(e) for e in errors[:5])
        if len(errors) > 5:
            detail += f"; and {len(errors) - 5} more"
        _log_refusal(request, 400 if malformed else 422, detail)
        return JSONResponse({"detail": detail}, status_code=400 if malformed else 422)

    @app.exception_handler(StarletteHTTPException)
    async def refused(request: Request, exc: StarletteHTTPException) -> Response:
        _log_refusal(request, exc.status_code, str(exc.detail))
        return await http_exception_handler(request, exc)

    @app.exception_handler(sqlite3.OperationalError)
    @app.exception_handler(OSError)
    async def cannot_store(request: Request, exc: Exception) -> JSONResponse:
        """The index or the store cannot take what a request brings now: 507 for a full
        disk, 503 for an index a command holds past busy_timeout. Its transaction rolled
        back, so nothing of it was applied, and the caller sends it again later (a peer
        takes any 5xx so). Any other such error is a bug: a 500 with its traceback."""
        status = _storage_status(exc)
        if status is None:
            raise exc
        detail = f"this machine cannot store it now: {exc}"
        _log_refusal(request, status, detail)
        return JSONResponse({"detail": detail}, status_code=status)

    @app.post("/v1/hello", response_model=None)
    async def hello(body: Hello, request: Request) -> dict | JSONResponse:
        try:
            return service.hello(body.device, body.name, body.fingerprint, body.server)
        except Unproven as e:
            _log_refusal(request, 403, str(e), logging.INFO)
            return JSONResponse({"detail": str(e)}, status_code=403)
        except PermissionError as e:
            raise HTTPException(403, str(e)) from None

    @app.post("/v1/cluster-key")
    async def cluster_key(body: NewKey) -> dict:
        """A peer this machine admits hands over the cluster's new key (syncd cluster-key
        --rotate): signed with the key in use, over mutual TLS."""
        service.take_key(bytes.fromhex(body.key))
        return {"ok": True}

    @app.post("/v1/changes", openapi_extra=_json_body(Changes),
              responses={422: VALIDATION_ERROR})
    async def push(request: Request) -> dict:
        body = await _validated(Changes, request)
        caller = service.caller()
        if body.device != caller:  # a peer pushes in its own name only (rule 7)
            raise HTTPException(403, f"this connection's certificate is device {caller}'s: "
                                     f"it may not push as device {body.device}")
        for s in body.changes:
            if s.parent is None and s.id != "root":
                raise HTTPException(422, f"node {s.id} has no parent")
        applied = service.receive(body.device, [s.model_dump() for s in body.changes])
        return {"applied": applied}

    @app.get("/v1/changes")
    async def pull(since: Annotated[int, Query(ge=0, lt=1 << 62)] = 0,
                   limit: Annotated[int, Query(ge=1, le=MAX_BATCH)] = MAX_BATCH,
                   inline: Inline = False, xattr: Inline = False) -> dict:
        states, last = service.changes_since(since, limit, inline, xattr)
        return {"changes": states, "seq": last}

    @app.get("/v1/nodes/{node_id}")
    async def node_state(node_id: NodeId, inline: Inline = False,
                         xattr: Inline = False) -> dict:
        """One node's current state: for a peer whose version of it is held by nobody
        any more, because a newer one is on its way (soak bug 7)."""
        state = service.state_of(node_id, inline, xattr)
        if state is None:
            raise HTTPException(404, f"node {node_id} is not known here")
        return {"state": state}

    @app.post("/v1/hold")
    async def hold(body: HoldList) -> dict:
        """Keep a copy of these chunks: answers at once with how many are still missing
        here, and fetches those in the background (the caller asks again)."""
        return {"missing": service.hold([bytes.fromhex(h) for h in body.chunks])}

    @app.post("/v1/lease")
    async def lease(body: LeaseList) -> dict:
        """Keep these chunks here (no eviction) for `seconds`: a peer is about to evict
        its own copies. Answers with those held here, now leased (syncd/cache.py)."""
        held = service.lease([bytes.fromhex(h) for h in body.chunks], body.seconds)
        return {"leased": [d.hex() for d in held]}

    @app.get("/v1/chunks/{digest}")
    async def chunk(digest: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")],
                    request: Request) -> Response:
        wanted = bytes.fromhex(digest)
        data = service.read_inline([wanted]).get(wanted)  # small: read here
        if data is None:
            data = await trio.to_thread.run_sync(service.read_chunk, wanted)
        if data is None:
            raise HTTPException(404, f"chunk {digest} is not held here")
        start = _range_start(request.headers.get("range"), len(data))
        if start is None:
            return Response(data, media_type="application/octet-stream")
        return Response(data[start:], status_code=206, media_type="application/octet-stream",
                        headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})

    @app.post("/v1/chunks")
    async def chunks(body: ChunkList) -> Response:
        """Many chunks in one answer: their bytes one after another, and X-Syncd-Sizes
        giving each one's length, -1 for one not held here."""
        wanted = [bytes.fromhex(h) for h in body.chunks]
        inline = service.read_inline(wanted)  # small ones, from the index: read here

        def read() -> tuple[str, bytes]:  # a worker thread's: files, and copies of MiBs
            found = [inline.get(d) or service.read_chunk(d) for d in wanted]
            return (",".join(str(-1 if d is None else len(d)) for d in found),
                    b"".join(d for d in found if d is not None))
        sizes, data = await trio.to_thread.run_sync(read)
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Syncd-Sizes": sizes})

    _describe_models(app, Changes)
    return app


# Read by pydantic from the body's bytes: FastAPI's way, json.loads then validating the
# objects it made, took twice as long for a push (most of a joining peer's time).

def _json_body(model: type[BaseModel]) -> dict:
    """The OpenAPI request body of an operation that reads `model` itself (_validated)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"{REF}{model.__name__}"}}}}}


REF = "#/components/schemas/"
VALIDATION_ERROR = {"description": "Validation Error", "content": {"application/json": {
    "schema": {"$ref": f"{REF}HTTPValidationError"}}}}


def _describe_models(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put `models` (bodies no handler's signature names) among the description's
    components, as FastAPI does for the ones that are named."""
    described = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schemas = described()["components"]["schemas"]
            for model in models:
                schema = model.model_json_schema(ref_template=REF + "{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return app.openapi_schema

    app.openapi = openapi


async def _validated(model: type[BaseModel], request: Request) -> BaseModel:
    """The request's JSON body as `model`, in one pass of pydantic over its bytes;
    refused as FastAPI refuses a body it validates (RequestValidationError: 400 or 422),
    one that is not declared JSON included."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "application/json" and not (kind.startswith("application/")
                                           and kind.endswith("+json")):
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",),
                                       "msg": "not JSON",
                                       "ctx": {"error": "the content type is not JSON"}}])
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        if not any(error["type"] == "json_invalid" for error in e.errors()):
            raise _in_body(e) from None
    # pydantic's parser refuses some JSON Python's takes (a lone surrogate, NaN): such a
    # body is answered as before, from what json.loads makes of it.
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as e:  # not JSON, not UTF-8, too deep
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", getattr(e, "pos", 0)),
            "msg": "JSON decode error", "ctx": {"error": getattr(e, "msg", str(e))}}]) from None
    try:
        return model.model_validate(parsed)
    except ValidationError as e:
        raise _in_body(e) from None


def _in_body(e: ValidationError) -> RequestValidationError:
    return RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                   for error in e.errors(include_input=False)])


def _range_start(header: str | None, size: int) -> int | None:
    if not header:
        return None
    m = re.fullmatch(r"bytes=(\d+)-", header.strip())
    if not m or int(m[1]) >= size:
        raise HTTPException(416, f"unsupported or unsatisfiable range {header[:40]!r}")
    return int(m[1])


def _describe(error: dict) -> str:
    """One validation error as `where: what`, without the input it was about."""
    where = ".".join(str(p) for p in error["loc"][1:] if error["loc"][0] == "body") or \
        ".".join(str(p) for p in error["loc"])
    what = error["msg"]
    if error["type"] == "json_invalid":
        where = "body"
        what = f"not JSON: {error.get('ctx', {}).get('error', what)}"
    text = f"{where or 'body'}: {what}"[:300]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _storage_status(exc: Exception) -> int | None:
    """507 for a full disk, 503 for a busy index, None for anything else."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        return 507 if "full" in text else 503 if "locked" in text else None
    return 507 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None


def _log_refusal(request: Request, status: int, detail: str,
                 level: int | None = None) -> None:
    target = request.scope["raw_path"].decode("latin-1")[:200]
    # a chunk asked of every holder in turn is no news; the rest says a peer misbehaves
    if level is None:
        level = logging.INFO if status == 404 else logging.WARNING
    log.log(level, "refused %s %s: %d %s", request.method, target, status, detail)


class Signed:
    """ASGI layer: checks each request's signature before the app, signs each response.

    The body is read whole (at most MAX_BODY) because its hash is part of the signature;
    so is the response body. Chunks are at most 1 MiB, batches a few MiB. Signatures cover
    bodies as sent: a zstd request body is verified before it is decompressed, and a
    response is compressed (when the client accepts zstd and it pays) before it is signed.
    """

    def __init__(self, app, key: bytes, admit=lambda method, path: None):
        """`admit(method, path)` says why this connection's client may not make the
        request (403), or None (the certificate checks: PeerService.admit)."""
        self.app = app
        self.key = key
        self.verifier = auth.Verifier(key)
        self.admit = admit

    def set_key(self, key: bytes) -> None:
        """Check requests with this key from now on (the cluster key was changed); the
        nonces seen stay refused."""
        self.key = self.verifier.key = key

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        target = scope["raw_path"].decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":  # nobody to answer; nothing to do
                log.warning("%s %s: the client left before sending its whole body",
                            scope["method"], target[:200])
                return
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                log.warning("refused %s %s: body over 64 MiB", scope["method"], target[:200])
                return await _reply(send, 413, {"detail": "body over 64 MiB"})
            if not message.get("more_body"):
                break
        BYTES_RECEIVED.labels("").inc(len(body))
        key = self.key  # the answer is signed with the key the request was checked with
        try:
            self.verifier.check_request(scope["method"], target, headers, bytes(body))
        except auth.AuthError as e:
            log.warning("refused %s %s: %s", scope["method"], target[:200], e)
            return await _reply(send, 401, {"detail": str(e)})
        nonce = headers.get(auth.NONCE.lower(), "")

        async def refuse(status: int, detail: str) -> None:
            """Refuse a request that passed authentication: logged, and signed like
            every answer to a signed request (a peer drops unsigned ones)."""
            log.warning("refused %s %s: %d %s", scope["method"], target[:200], status, detail)
            await _reply(send, status, {"detail": detail}, (key, nonce))

        refusal = self.admit(scope["method"], scope["path"])
        if refusal is not None:
            return await refuse(403, refusal)
        if headers.get("content-encoding", "identity") not in ("identity", "zstd"):
            return await refuse(415, "bodies are zstd or not encoded")
        if headers.get("content-encoding") == "zstd":
            try:
                body = compress.unpack(bytes(body), MAX_BODY)
            except compress.BadEncoding as e:
                return await refuse(400, str(e))
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"]
                                          if k.lower() != b"content-encoding"]}
        zstd_ok = "zstd" in headers.get("accept-encoding", "")
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return {"type": "http.disconnect"}
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        start: dict = {}
        parts: list[bytes] = []

        async def capture(message):
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    out = parts[0] if len(parts) == 1 else b"".join(parts)
                    headers = start.get("headers", [])
                    packed, digest = await off_loop(len(out), _seal, out, zstd_ok)
                    if packed is not None:
                        out = packed
                        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                        headers += [(b"content-encoding", b"zstd"),
                                    (b"content-length", str(len(out)).encode())]
                    signed = auth.sign_response(key, start["status"], nonce, digest)
                    headers += [(k.lower().encode(), v.encode()) for k, v in signed.items()]
                    await send({**start, "headers": headers})
                    await _send_body(send, out)
                    BYTES_SENT.labels("").inc(len(out))

        await self.app(scope, replay, capture)


async def off_loop(size: int, fn, *args):
    """fn(*args), which works on a body of `size` bytes: on a worker thread when the body
    is big, so that the trio thread (FUSE, the other peers) keeps moving and the second
    core works; inline when it is small, where the hop would cost more than the work."""
    if size < BIG_BODY:
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args)


async def _send_body(send, body: bytes) -> None:
    """A response body in slices of SEND_SLICE: TLS encrypts each as it goes out, so the
    first bytes leave before the last are encrypted, and the TLS layer's buffer stays one
    slice (in one piece, 8 MiB grew it by copies and cleared each copy it let go)."""
    view = memoryview(body)
    for at in range(0, max(len(view), 1), SEND_SLICE):
        await send({"type": "http.response.body", "body": view[at:at + SEND_SLICE],
                    "more_body": at + SEND_SLICE < len(view)})


def _seal(body: bytes, zstd_ok: bool) -> tuple[bytes | None, bytes]:
    """A response body's zstd frame (None when it travels as it is, see compress.pack),
    and the body_hash of the bytes that travel."""
    packed = compress.pack(body) if zstd_ok else None
    return packed, auth.body_hash(body if packed is None else packed)


async def _reply(send, status: int, payload: dict,
                 signing: tuple[bytes, str] | None = None) -> None:
    """A JSON answer from the signing layer itself; signed with (key, request nonce)."""
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if signing is not None:
        signed = auth.sign_response(signing[0], status, signing[1], auth.body_hash(body))
        headers += [(k.lower().encode(), v.encode()) for k, v in signed.items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
