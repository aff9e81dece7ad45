"""The floor of the FUSE request path on syncd's stack: a file system in memory on pyfuse3
and trio that answers each request with as little work as Python allows.

    python bench/floorfs.py MOUNTPOINT [--xattrs]  # in the foreground, until fusermount3 -u

bench/fs.py mounts it as its `floor` side. A workload on it costs the FUSE round trips,
pyfuse3 and trio, and nothing else: no system call per request (unlike pyfuse3's
passthrough example) and no index (unlike syncd). What a mount cannot beat on this stack,
whatever its handlers do. Its timeouts are pyfuse3's defaults (long), like syncd's.

With `--xattrs` it answers getxattr (ENOATTR: none set), as a file system with extended
attributes must (syncd and pyfuse3's passthrough example do); without, pyfuse3's default
ENOSYS makes the kernel stop asking. With them the kernel asks for `security.capability`
before every write() and every chown or chmod through a handle: two more round trips per
file of `tar -xf`. bench/fs.py mounts it with `--xattrs`, the floor of a mount like syncd.
"""
import errno
import os
import stat
import sys
import time

import pyfuse3
import trio


class Node:
    __slots__ = ("attr", "data", "children", "target")

    def __init__(self, ino, mode, ctx, target=b""):
        now = time.time_ns()
        a = self.attr = pyfuse3.EntryAttributes()
        a.st_ino, a.st_mode, a.st_nlink = ino, mode, 2 if stat.S_ISDIR(mode) else 1
        a.st_uid, a.st_gid = (ctx.uid, ctx.gid) if ctx else (os.getuid(), os.getgid())
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = now
        a.st_blksize = 128 * 1024
        self.data = bytearray()
        self.children = {} if stat.S_ISDIR(mode) else None
        self.target = target


class FloorFS(pyfuse3.Operations):
    def __init__(self):
        super().__init__()
        self.nodes = {pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, None)}
        self.next_ino = pyfuse3.ROOT_INODE + 1

    def _node(self, ino):
        try:
            return self.nodes[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _child(self, parent, name):
        try:
            return self._node(parent).children[name]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _make(self, parent, name, mode, ctx, target=b""):
        children = self._node(parent).children
        if name in children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        node = self.nodes[ino] = Node(ino, mode, ctx, target)
        node.attr.st_size = len(target)
        children[name] = ino
        return node.attr

    async def lookup(self, parent_inode, name, ctx=None):
        return self._node(self._child(parent_inode, name)).attr

    async def getattr(self, inode, ctx=None):
        return self._node(inode).attr

    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        a = node.attr
        if fields.update_size:
            del node.data[attr.st_size:]
            node.data.extend(bytes(attr.st_size - len(node.data)))
            a.st_size = attr.st_size
        if fields.update_mode:
            a.st_mode = stat.S_IFMT(a.st_mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            a.st_uid = attr.st_uid
        if fields.update_gid:
            a.st_gid = attr.st_gid
        if fields.update_atime:
            a.st_atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            a.st_mtime_ns = attr.st_mtime_ns
        a.st_ctime_ns = time.time_ns()
        return a

    async def mkdir(self, parent_inode, name, mode, ctx):
        return self._make(parent_inode, name, stat.S_IFDIR | stat.S_IMODE(mode), ctx)

    async def symlink(self, parent_inode, name, target, ctx):
        return self._make(parent_inode, name, stat.S_IFLNK | 0o777, ctx, target)

    async def readlink(self, inode, ctx):
        return self._node(inode).target

    async def create(self, parent_inode, name, mode, flags, ctx):
        attr = self._make(parent_inode, name, mode, ctx)
        return pyfuse3.FileInfo(fh=attr.st_ino), attr

    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if flags & os.O_TRUNC:
            node.data.clear()
            node.attr.st_size = 0
        return pyfuse3.FileInfo(fh=inode)

    async def read(self, fh, off, size):
        return bytes(self.nodes[fh].data[off:off + size])

    async def write(self, fh, off, buf):
        node = self.nodes[fh]
        if off > len(node.data):
            node.data.extend(bytes(off - len(node.data)))
        node.data[off:off + len(buf)] = buf
        node.attr.st_size = len(node.data)
        node.attr.st_mtime_ns = time.time_ns()
        return len(buf)

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        pass

    async def release(self, fh):
        pass

    async def link(self, inode, new_parent_inode, new_name, ctx):
        children = self._node(new_parent_inode).children
        if new_name in children:
            raise pyfuse3.FUSEError(errno.EEXIST)
        children[new_name] = inode
        attr = self._node(inode).attr
        attr.st_nlink += 1
        return attr

    def _drop_name(self, parent, name):
        ino = self._node(parent).children.pop(name)
        node = self.nodes[ino]
        node.attr.st_nlink -= 1
        if node.attr.st_nlink == 0 or node.children is not None:
            del self.nodes[ino]  # forget is ignored: the kernel asks nothing of it again

    async def unlink(self, parent_inode, name, ctx):
        self._child(parent_inode, name)
        self._drop_name(parent_inode, name)

    async def rmdir(self, parent_inode, name, ctx):
        if self._node(self._child(parent_inode, name)).children:
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._drop_name(parent_inode, name)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        ino = self._child(parent_inode_old, name_old)
        if name_new in self._node(parent_inode_new).children:
            self._drop_name(parent_inode_new, name_new)
        self._node(parent_inode_old).children.pop(name_old)
        self._node(parent_inode_new).children[name_new] = ino

    async def opendir(self, inode, ctx):
        self._node(inode)
        return inode

    async def readdir(self, fh, start_id, token):
        entries = list(self.nodes[fh].children.items())
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, self.nodes[ino].attr, i + 1):
                break

    async def releasedir(self, fh):
        pass

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = s.f_ffree = s.f_favail = 1 << 30
        s.f_namemax = 255
        return s


class FloorXattrFS(FloorFS):
    async def getxattr(self, inode, name, ctx):
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--xattrs"]):
        sys.exit(__doc__.split("\n\n")[1])
    options = set(pyfuse3.default_options)
    options.add("fsname=floorfs")
    fs = FloorXattrFS() if sys.argv[2:] else FloorFS()
    pyfuse3.init(fs, sys.argv[1], options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    main()
