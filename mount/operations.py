"""The FUSE boundary: pyfuse3 Operations that turn each request into index and store calls.

Caching contract. Attributes and entries are cached by the kernel for `timeout` seconds and
pages survive a reopen (`keep_cache`); every change made through this mount goes through
the kernel, which keeps those caches right. Changes made behind the kernel's back (a peer's,
applied by the daemon) are invalidated explicitly, from a notifier thread, never from a
handler (mount/notify.py). The
writeback cache stays off: the kernel would then own sizes and times.

Lookup counts live in memory (they belong to one mount session). An inode is purged when
it has no names, no lookups and no open handles (pyfuse3 `rst/gotchas.rst`). Purges of
small inodes are gathered and done together, a batch per transaction: a purge changes
nothing in the share, and an inode left unpurged by a crash is purged by the recovery.

Every handler runs under `handler`, which turns OSError into its errno and anything else
into a logged EIO: an exception escaping a handler would kill the mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sqlite3
import stat
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

import pyfuse3
import trio
from pyfuse3 import FUSEError
from syncd.index.cache import Usage
from syncd.index.catalog import XATTR_SIZE_MAX, Catalog, Inode, check_name
from syncd.index.effects import Effects
from syncd.index.merge import Merger
from syncd.index.store import ChunkStore
from syncd.mount.content import Content
from syncd.mount.notify import Notifier

log = logging.getLogger(__name__)

BLKSIZE = 128 * 1024  # makes cp and stdio use large buffers, so writes come in big requests
# An inode without names that holds at least this much is purged as soon as nothing refers
# to it (deleting a big file gives its space back at once); smaller ones are gathered,
# PURGE_BATCH or what PURGE_DELAY seconds bring to a transaction.
PURGE_AT_ONCE = 1 << 20
PURGE_BATCH = 256
PURGE_DELAY = 0.05
KIND_BITS = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
             "fifo": stat.S_IFIFO, "socket": stat.S_IFSOCK, "chardev": stat.S_IFCHR,
             "blockdev": stat.S_IFBLK}
MKNOD_KINDS = {bits: kind for kind, bits in KIND_BITS.items() if kind not in ("dir", "symlink")}
SQLITE_FULL = 13


def handler(fn, op: str = ""):
    """Wraps a request's handler; `op` names it in `requests` (default: its own name)."""
    op = op or fn.__name__

    @functools.wraps(fn)
    async def wrapper(self, *args):
        self.requests[op] += 1
        try:
            return await fn(self, *args)
        except FUSEError:
            raise
        except OSError as e:
            if e.errno is None:
                log.exception("%s%r failed", fn.__name__, args[:2])
                raise FUSEError(errno.EIO) from None
            if e.errno == errno.ENOSPC:
                log.warning("%s: no space left in %s", fn.__name__, self.store.root)
                self.store.make_room()  # what follows may fit
            raise FUSEError(e.errno) from None
        except sqlite3.Error as e:
            if getattr(e, "sqlite_errorcode", None) == SQLITE_FULL:
                log.warning("%s: the index is full (no space left on its disk)", fn.__name__)
                self.store.make_room(for_index=True)
                raise FUSEError(errno.ENOSPC) from None
            log.exception("%s%r failed", fn.__name__, args[:2])
            raise FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s%r failed", fn.__name__, args[:2])
            raise FUSEError(errno.EIO) from None

    return wrapper


VIRTUAL_XATTRS = "user.syncd."
# Rows read per query of a listing: a READDIRPLUS reply is one page (4 KiB), ~25 entries
# with their attributes, and each request reads its own rows again from its offset.
READDIR_ROWS = 64


def _xattr_key(raw: bytes, writing: bool) -> str:
    """An extended attribute's name as stored: user.* in UTF-8 (others are EILSEQ to set,
    as file names are, and never there to read). Setting or removing one of the virtual
    user.syncd.* is EPERM, any other namespace EOPNOTSUPP."""
    try:
        key = raw.decode()
    except UnicodeDecodeError:
        raise FUSEError(errno.EILSEQ if writing else pyfuse3.ENOATTR) from None
    if not key.startswith("user.") or len(key) == len("user."):
        raise FUSEError(errno.EOPNOTSUPP if writing else pyfuse3.ENOATTR)
    if writing and key.startswith(VIRTUAL_XATTRS):
        raise FUSEError(errno.EPERM)
    return key


def lookup_name(raw: bytes) -> str:
    """A name to look up: one that cannot be stored cannot exist."""
    try:
        return check_name(raw)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise
        raise FUSEError(errno.ENOENT) from None


@dataclass
class Handle:
    ino: int
    writable: bool
    append: bool
    arriving: bool = False  # its content is still being fetched: reads wait for theirs


class Fetch(Protocol):
    """Gets missing content from peers (the daemon's fetcher), verified before any read."""

    async def opening(self, ino: int, whole: bool) -> bool:
        """Before an open: the whole content here, or its first chunk; True when the
        rest is still arriving."""

    async def reading(self, ino: int, offset: int, size: int) -> bool:
        """Before a read of content still arriving: the bytes it covers are here; True
        while the rest is still arriving."""

    def fetching(self, ino: int) -> bool:
        """Is this inode's content being fetched right now?"""


class Filesystem(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, catalog: Catalog, store: ChunkStore, timeout: float = 60.0,
                 fetch: Fetch | None = None, name: str = "",
                 requests: Counter[str] | None = None, usage: Usage | None = None):
        """`fetch` gets a file's missing content from peers; None when this home has no
        peers to ask. `name` is this machine's (user.syncd.holders). `requests` counts the
        requests answered, by operation (lookup, read, ...), for whoever reads it (the
        status page's metrics). `usage` records opens and last uses for the cache's
        eviction (index/cache.py), which runs in the daemon."""
        super().__init__()
        self.name = name
        self.catalog = catalog
        self.store = store
        self.fetch = fetch
        self.content = Content(catalog, store, Merger(catalog), self._changed_behind_kernel)
        self.timeout = timeout
        self.lookups: Counter[int] = Counter()
        self.requests: Counter[str] = Counter() if requests is None else requests
        # Inodes that lost their last name (here, or through a peer's change), until
        # purged. Only these are ever purged, so the last release or forget of any other
        # inode asks the index nothing.
        self.unnamed: set[int] = set()
        self.purgeable: list[int] = []  # unnamed, and nothing refers to them any more
        self._purge_due = trio.Event()
        self.handles: dict[int, Handle] = {}
        self.opened: Counter[int] = Counter()  # open handles per inode
        self.usage = usage if usage is not None else Usage()
        self.writers: Counter[int] = Counter()  # open writable handles per inode
        self._next_fh = 1
        self.initialized = trio.Event()  # the kernel's INIT has been answered
        self.notifier = Notifier()

    async def follow(self, remote: trio.MemoryReceiveChannel[Effects]) -> None:
        """Take what peers' changes did to the index (the daemon sends it once applied)
        into the kernel's view, until the channel closes."""
        async for effects in remote:
            try:
                self._changed_behind_kernel(effects)
            except Exception:  # one failed purge must not end the mount
                log.exception("after a peer's change")

    def _changed_behind_kernel(self, effects: Effects) -> None:
        """The index changed behind the kernel's back (a peer's change, or one merged with
        it): drop what the kernel caches of it (on the notifier's thread) and purge inodes
        left without names. A file open here keeps its inode, and what is written to it
        and committed later is a concurrent version (rule 6, Catalog.detached)."""
        self.notifier.post(effects)
        for ino in effects.orphans:
            if not self.catalog.nodes_of(ino):
                self._lost_name(ino)

    def init(self) -> None:
        self.initialized.set()

    # -- attributes

    def attrs(self, inode: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        mode, size, mtime = inode.mode, inode.size, inode.mtime_ns
        uid, gid = inode.uid, inode.gid
        draft = self.content.drafts.get(inode.ino)
        if draft is not None:
            size = draft.size
            mtime = mtime if draft.mtime_ns is None else draft.mtime_ns
            mode = mode if draft.mode is None else draft.mode
            uid, gid = draft.owner.get("uid", uid), draft.owner.get("gid", gid)
        a.st_ino = inode.ino
        a.generation = 0
        a.st_mode = KIND_BITS[inode.kind] | mode
        # Directories report 1: "link count unknown", which keeps find's leaf
        # optimisation off without counting subdirectories on every getattr.
        a.st_nlink = 1 if inode.kind == "dir" else inode.nlink
        a.st_uid = uid
        a.st_gid = gid
        a.st_rdev = inode.rdev
        a.st_size = size
        a.st_blksize = BLKSIZE
        a.st_blocks = (size + 511) // 512
        a.st_atime_ns = inode.atime_ns
        a.st_mtime_ns = mtime
        a.st_ctime_ns = inode.ctime_ns
        a.attr_timeout = self.timeout
        a.entry_timeout = self.timeout
        return a

    def _entry(self, inode: Inode) -> pyfuse3.EntryAttributes:
        """Attributes for a reply that makes the kernel count one more lookup."""
        self.lookups[inode.ino] += 1
        return self.attrs(inode)

    @handler
    async def lookup(self, parent_inode, name, ctx=None):
        if name == b".":
            return self._entry(self.catalog.inode(parent_inode))
        if name == b"..":
            return self._entry(self.catalog.inode(self.catalog.parent_ino(parent_inode)))
        entry = self.catalog.lookup(parent_inode, lookup_name(name))
        if entry is None:
            raise FUSEError(errno.ENOENT)
        return self._entry(entry.inode)

    @handler
    async def getattr(self, inode, ctx=None):
        return self.attrs(self.catalog.inode(inode))

    @handler
    async def setattr(self, inode, attr, fields, fh, ctx):
        open_for_writing = self.writers[inode] > 0  # only files have writers
        if fields.update_size:
            kind = self.catalog.inode(inode).kind
            if kind != "file":
                raise FUSEError(errno.EISDIR if kind == "dir" else errno.EINVAL)
            await self.content.truncate(inode, attr.st_size)
            if not open_for_writing:
                await self.content.commit(inode)
                self.content.close(inode)
        columns = {}
        if fields.update_mode:
            columns["mode"] = attr.st_mode & 0o7777
        if fields.update_mtime:
            columns["mtime_ns"] = attr.st_mtime_ns
        if fields.update_uid:
            columns["uid"] = attr.st_uid
        if fields.update_gid:
            columns["gid"] = attr.st_gid
        if open_for_writing and columns:  # tar and cp -p: these fold into the commit at flush
            draft = self.content.draft(inode)
            draft.mode = columns.pop("mode", draft.mode)
            draft.mtime_ns = columns.pop("mtime_ns", draft.mtime_ns)
            draft.owner.update(columns)
            columns = {}
        if fields.update_atime:
            columns["atime_ns"] = attr.st_atime_ns
        if fields.update_ctime:
            columns["ctime_ns"] = attr.st_ctime_ns
        if columns:
            return self.attrs(self.catalog.set_attributes(inode, **columns))
        return self.attrs(self.catalog.inode(inode))

    @handler
    async def readlink(self, inode, ctx):
        target = self.catalog.inode(inode).target
        if target is None:
            raise FUSEError(errno.EINVAL)
        return target

    @handler
    async def statfs(self, ctx):
        st = os.statvfs(self.store.root)
        out = pyfuse3.StatvfsData()
        out.f_bsize = BLKSIZE
        out.f_frsize = st.f_frsize
        out.f_blocks, out.f_bfree, out.f_bavail = st.f_blocks, st.f_bfree, st.f_bavail
        out.f_files, out.f_ffree, out.f_favail = st.f_files, st.f_ffree, st.f_favail
        out.f_namemax = 255
        return out

    # -- extended attributes (docs/cli.md, "What is shared")
    #
    # user.* attributes are stored and synced (Catalog.set_xattr); user.syncd.* are
    # virtual: read-only views of the sync state, readable by name, never listed (so copy
    # tools never write them back), EPERM to set or remove. Other namespaces (security.,
    # trusted., system.) are not supported: EOPNOTSUPP to set, ENODATA to read. The
    # kernel refuses names over 255 bytes and values over 64 KiB (XATTR_SIZE_MAX: E2BIG)
    # before we see them, and user.* on anything but files and directories.

    @handler
    async def setxattr(self, inode, name, value, ctx):
        key = _xattr_key(name, writing=True)
        if len(value) > XATTR_SIZE_MAX:
            raise FUSEError(errno.E2BIG)
        self.catalog.set_xattr(inode, key, bytes(value))

    @handler
    async def removexattr(self, inode, name, ctx):
        self.catalog.set_xattr(inode, _xattr_key(name, writing=True), None)

    async def getxattr(self, inode, name, ctx):
        # The kernel asks for security.capability before each write() and each chown
        # through a handle (tar: twice per file). No name outside user.* is ever there:
        # that answer costs what a file system with no attributes at all would pay.
        if not name.startswith(b"user."):
            self.requests["getxattr"] += 1
            raise FUSEError(pyfuse3.ENOATTR)
        return await self._user_xattr(inode, name)

    @functools.partial(handler, op="getxattr")
    async def _user_xattr(self, inode, name):
        key = _xattr_key(name, writing=False)
        if key.startswith(VIRTUAL_XATTRS):
            return self._virtual_xattr(inode, key)
        value = self.catalog.xattr(inode, key)
        if value is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return value

    @handler
    async def listxattr(self, inode, ctx):
        return [name.encode() for name in self.catalog.xattr_names(inode)]

    def _virtual_xattr(self, ino: int, key: str) -> bytes:
        """user.syncd.state: local-only (a special file, never sent), conflict (a conflict
        copy), fetching (its content is arriving now), missing (not here: fetched at its
        first open) or local. user.syncd.holders: the machines known to hold a file's
        content, comma-separated: this one when it is all here, and the version's maker."""
        kind = self.catalog.inode(ino).kind
        local_only, conflict, makers = self.catalog.sync_facts(ino)
        if key == "user.syncd.state":
            if local_only:
                return b"local-only"
            if conflict:
                return b"conflict"
            if kind == "file" and self.fetch is not None and self.fetch.fetching(ino):
                return b"fetching"
            if kind == "file" and not self.catalog.is_local(ino):
                return b"missing"
            return b"local"
        if key == "user.syncd.holders" and kind == "file" and not local_only:
            holders = [self.name] if self.catalog.is_local(ino) else []
            for device, peer in makers:
                holder = self.name if device == self.catalog.device else peer or device
                if holder not in holders:
                    holders.append(holder)
            return ",".join(holders).encode()
        raise FUSEError(pyfuse3.ENOATTR)

    # -- directories

    @handler
    async def opendir(self, inode, ctx):
        self.catalog.dir_node(inode)
        return inode

    @handler
    async def readdir(self, fh, start_id, token):
        # Offsets are node entry numbers: stable and increasing, so entries created or
        # removed meanwhile never make others skip or repeat.
        after = start_id
        while True:
            batch = self.catalog.children(fh, after, READDIR_ROWS)
            if not batch:
                return
            for e in batch:
                if not pyfuse3.readdir_reply(token, e.name.encode(), self.attrs(e.inode),
                                             e.entry):
                    return
                self.lookups[e.inode.ino] += 1
            after = batch[-1].entry

    async def releasedir(self, fh):
        self.requests["releasedir"] += 1

    async def fsyncdir(self, fh, datasync):
        self.requests["fsyncdir"] += 1  # directory changes are committed as they happen

    @handler
    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._new(parent_inode, name, "dir", mode, ctx)

    @handler
    async def symlink(self, parent_inode, name, target, ctx):
        return self._new(parent_inode, name, "symlink", 0o777, ctx, target)

    @handler
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        """FIFOs, sockets (bind() makes one) and device nodes, local to this machine
        (schema.py), and regular files made by mknod(2). The kernel has checked
        CAP_MKNOD for devices, and serves the opens of all of these itself (a device on
        this nodev mount: EACCES); none reaches open() here."""
        kind = MKNOD_KINDS.get(stat.S_IFMT(mode))
        if kind is None:
            raise FUSEError(errno.EINVAL)
        device = kind in ("chardev", "blockdev")
        return self._new(parent_inode, name, kind, mode, ctx, rdev=rdev if device else 0)

    def _new(self, parent_inode, name, kind, mode, ctx, target=None, rdev=0, later=False):
        """A new node owned by the caller, with mode minus umask; setgid directories pass
        their group (and, to directories, the bit) on."""
        parent = self.catalog.inode(parent_inode)
        gid = ctx.gid
        if kind != "symlink":
            mode &= ~ctx.umask
        if parent.mode & stat.S_ISGID:
            gid = parent.gid
            if kind == "dir":
                mode |= stat.S_ISGID
        entry = self.catalog.create(parent_inode, check_name(name), kind, mode & 0o7777,
                                    ctx.uid, gid, target, rdev=rdev, later=later,
                                    directory=parent)
        return self._entry(entry.inode)

    @handler
    async def unlink(self, parent_inode, name, ctx):
        self._lost_name(self.catalog.unlink(parent_inode, lookup_name(name)))

    @handler
    async def rmdir(self, parent_inode, name, ctx):
        self._lost_name(self.catalog.rmdir(parent_inode, lookup_name(name)))

    @handler
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise FUSEError(errno.EINVAL)
        self._lost_name(self.catalog.rename(
            parent_inode_old, lookup_name(name_old), parent_inode_new, check_name(name_new),
            noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE),
        ))

    @handler
    async def link(self, inode, new_parent_inode, new_name, ctx):
        entry = self.catalog.link(inode, new_parent_inode, check_name(new_name))
        return self._entry(entry.inode)

    # -- files

    def _open_handle(self, ino: int, flags: int) -> pyfuse3.FileInfo:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(ino, writable, bool(flags & os.O_APPEND))
        self.opened[ino] += 1
        self.usage.opened(ino)
        if writable:
            self.writers[ino] += 1
        return pyfuse3.FileInfo(fh=fh, keep_cache=True)

    @handler
    async def create(self, parent_inode, name, mode, flags, ctx):
        # Written with the file's commit at close, or by whatever reaches the index first.
        attrs = self._new(parent_inode, name, "file", mode, ctx, later=True)
        self.content.draft(attrs.st_ino, empty=True)  # its writes need not ask the index
        return self._open_handle(attrs.st_ino, flags), attrs

    @handler
    async def open(self, inode, flags, ctx):
        arriving = False
        if self.fetch is not None and not flags & os.O_TRUNC:
            # A reader starts once the first chunk is here and verified; a writer, whose
            # writes copy committed chunks, once all of them are.
            arriving = await self.fetch.opening(inode, whole=flags & os.O_ACCMODE != os.O_RDONLY)
        info = self._open_handle(inode, flags)
        self.handles[info.fh].arriving = arriving
        # libfuse enables ATOMIC_O_TRUNC, so O_TRUNC arrives here, not as a setattr. Linux
        # honours it even for O_RDONLY (the kernel has checked write permission), and
        # renews the mtime even of an empty file.
        if flags & os.O_TRUNC:
            await self.content.truncate(inode, 0)
            if ctx.uid != 0:
                self._drop_set_id_bits(inode)
            if not self.writers[inode]:  # no flush of a writer will commit it
                await self.content.commit(inode)
        return info

    def _drop_set_id_bits(self, ino: int) -> None:
        """What the kernel does on write or truncate by a caller without CAP_FSETID, and
        leaves to us for O_TRUNC: drop set-user-ID, and set-group-ID when group-executable
        (folds into the commit)."""
        draft = self.content.draft(ino)
        mode = self.catalog.inode(ino).mode if draft.mode is None else draft.mode
        kept = mode & ~stat.S_ISUID
        if mode & stat.S_IXGRP:
            kept &= ~stat.S_ISGID
        if kept != mode:
            draft.mode = kept

    @handler
    async def read(self, fh, off, size):
        h = self.handles[fh]
        if h.arriving:
            h.arriving = await self.fetch.reading(h.ino, off, size)
            self.content.arrived(h.ino)
        return self.content.read(h.ino, off, size)

    @handler
    async def write(self, fh, off, buf):
        h = self.handles[fh]
        return await self.content.write(h.ino, off, buf, append=h.append)

    @handler
    async def flush(self, fh):
        h = self.handles[fh]
        if h.writable and not await self.content.commit(h.ino):
            self.catalog.settle()  # a new file closed unwritten: its create commits now

    @handler
    async def fsync(self, fh, datasync):
        h = self.handles[fh]
        if not await self.content.commit(h.ino, durable=True):
            # Already committed, perhaps not durably: flush the home's file system.
            self.catalog.settle()
            await self.content.sync_all()

    @handler
    async def release(self, fh):
        h = self.handles.pop(fh)
        try:
            if h.writable:
                self.writers[h.ino] -= 1
                if not self.writers[h.ino]:
                    del self.writers[h.ino]
                    await self.content.commit(h.ino)
        finally:
            # Counted open until the commit is done, so an unlink meanwhile cannot
            # discard the draft under it.
            self.opened[h.ino] -= 1
            self.usage.released(h.ino)
        if not self.opened[h.ino]:
            del self.opened[h.ino]
            self.content.close(h.ino)
            self._maybe_purge(h.ino)

    async def forget(self, inode_list):
        self.requests["forget"] += 1
        for ino, n in inode_list:
            try:
                self.lookups[ino] -= n
                if self.lookups[ino] <= 0:
                    del self.lookups[ino]
                    self._maybe_purge(ino)
            except Exception:  # forget must never raise
                log.exception("forget of inode %d failed", ino)

    def _lost_name(self, ino: int | None) -> None:
        """Inode `ino` has no name left: purge it once nothing refers to it."""
        if ino is not None:
            self.unnamed.add(ino)
            self._maybe_purge(ino)

    def _maybe_purge(self, ino: int) -> None:
        """Drop what an inode without names no longer needs: its uncommitted writes once
        no handle is open (nobody can reach them), the inode itself once the kernel has
        forgotten it too."""
        if ino not in self.unnamed or self.opened[ino] > 0:
            return
        self.content.discard(ino)
        if self.lookups[ino] > 0:
            return
        self.unnamed.discard(ino)
        self.purgeable.append(ino)
        if len(self.purgeable) >= PURGE_BATCH or not self.catalog.is_smaller(
                ino, PURGE_AT_ONCE):
            self.purge()
        else:
            self._purge_due.set()

    def purge(self) -> None:
        """Purge the inodes gathered so far, in one transaction (kept for the next try if
        it fails)."""
        if self.purgeable:
            garbage = self.catalog.purge_inodes(self.purgeable)
            self.purgeable = []
            self.catalog.retire(garbage)

    async def purge_gathered(self) -> None:
        """Purge what _maybe_purge gathers, PURGE_DELAY after the first of a batch (a
        burst of deletions, rm -r or a build cleaning up, shares a transaction), and what
        is left when cancelled at unmount. Inodes the kernel never forgot are left for
        the recovery at the next start."""
        try:
            while True:
                await self._purge_due.wait()
                await trio.sleep(PURGE_DELAY)
                self._purge_due = trio.Event()
                self._purge_or_log()
        finally:
            self._purge_or_log()

    def _purge_or_log(self) -> None:
        try:
            self.purge()
        except sqlite3.OperationalError as e:  # a full disk: kept for the next batch
            log.warning("purging %d inode(s) without names failed: %s; tried again with "
                        "the next", len(self.purgeable), e)
        except Exception:  # kept for the next batch; a failed purge must not end the mount
            log.exception("purging %d inode(s) without names failed", len(self.purgeable))
