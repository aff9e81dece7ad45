"""Ignore rules: which paths stay on this machine only (docs/cli.md, "Ignore rules").

Rules are gitignore lines (the `pathspec` package) from three places, later ones winning:
DEFAULTS (editor and OS litter), the `.syncdignore` file of each directory from the root
down (each relative to its directory; it syncs, so the group ignores alike), and this
machine's own file (HOME/ignore, relative to the share's root; it does not sync). A path
under an ignored directory is ignored, and `.syncdignore` itself never is.

A file with a line that cannot be parsed, or that would ignore the root or everything in
it, is refused whole: an error naming the file and the line, and none of its rules apply.

Matching is cheap per create: each directory's chain of compiled rule files is cached by
its node, and each file is parsed once per content hash. The cache is dropped whenever a
rule file, or the place of a directory, changes (`invalidate`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.index.inline import INLINE_MAX
from syncd.index.schema import ROOT_ID

if TYPE_CHECKING:
    import pathspec

log = logging.getLogger(__name__)

IGNORE_FILE = ".syncdignore"
# Editor and OS litter. Not SQLite's -wal/-shm/-journal: a database travels with its
# journal (docs/cli.md says to close a database before it syncs).
DEFAULTS = (
    "*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", ".*.kate-swp", ".goutputstream-*",
    ".DS_Store", "._*", ".Spotlight-V100/", ".Trashes/", ".fseventsd/", "Thumbs.db",
    "ehthumbs.db", "desktop.ini", "$RECYCLE.BIN/", ".directory", ".Trash-*/",
    ".nfs*", ".fuse_hidden*",
)
# A rule file is at most this many bytes: so it always travels with its change
# (docs/protocol.md, `data`) and applies on every peer the moment it arrives.
RULES_MAX = INLINE_MAX
# Names no rule of the root's should match all of: a line that does ignores everything.
_PROBES = ("syncd-probe", "Z9.TXT", ".hidden", "_x y", "0", "\u00e9t\u00e9.md")


class RuleError(ValueError):
    """A rule file that is refused: the message names the file and the line."""


def _spec(lines: Iterable[str]) -> pathspec.GitIgnoreSpec:
    """Compiled rules. pathspec loads at the first compile, not with the catalog: what
    only reads the index (`syncd status`) never decides a name."""
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def parse(text: bytes, where: str, at_root: bool) -> pathspec.GitIgnoreSpec:
    """Compile a rule file's bytes, or refuse it whole. `where` names it in the error;
    `at_root`: its rules are relative to the share's root, where a line matching every
    name is refused."""
    if len(text) > RULES_MAX:
        raise RuleError(f"{where}: over {RULES_MAX} bytes")
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = text[:e.start].count(b"\n") + 1
        raise RuleError(f"{where}, line {line}: not valid UTF-8") from None
    from pathspec.patterns.gitignore import GitIgnorePatternError

    for number, line in enumerate(lines, 1):
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        if rule in ("/", ".", "./", "/."):
            raise RuleError(f"{where}, line {number}: {rule!r} would ignore the share's root")
        try:
            one = _spec([line])
        except GitIgnorePatternError as e:
            raise RuleError(f"{where}, line {number}: {e}") from None
        if at_root and (all(one.match_file(p) for p in _PROBES)
                        or all(one.match_file(p + "/") for p in _PROBES)):
            raise RuleError(f"{where}, line {number}: {rule!r} would ignore everything in "
                            "the share")
    return _spec(lines)


_GROUP_NAME = re.compile(r"\(\?P<\w+>")


def _any_rule(spec: pathspec.GitIgnoreSpec) -> re.Pattern:
    """One expression that matches a path when any rule of `spec` does: a name no rule
    matches (nearly all) is decided by one match instead of one per rule (~20 us a
    create with the defaults alone). Group names go: alternatives may not share them."""
    regexes = [p.regex for p in spec.patterns if getattr(p, "regex", None) is not None]
    try:
        if any(not isinstance(r.pattern, str) or r.flags & ~re.UNICODE for r in regexes):
            raise re.error("flags")
        unnamed = (_GROUP_NAME.sub("(?:", r.pattern) for r in regexes)
        return re.compile("|".join(f"(?:{r})" for r in unnamed) or "(?!)")
    except re.error:  # not one expression: every name is checked rule by rule
        return re.compile("")


@dataclass
class _Dir:
    path: str  # from the share's root, '' or ending in '/'
    specs: list[tuple[str, pathspec.GitIgnoreSpec]]  # (the rule file's directory, rules)
    ignored: bool  # by the rules of the directories above it
    # What a name here is checked against, in order: the defaults, `specs` and HOME/ignore,
    # those of one directory joined into one spec (one check instead of several), each
    # with its `_any_rule`.
    checks: list[tuple[str, pathspec.GitIgnoreSpec, re.Pattern]] | None = None


class IgnoreRules:
    """Decides by the rules whether a name in a directory is ignored.

    `parent_of(dir_node)` gives a directory's (parent node, name) and `rule_file(dir_node)`
    the content hash and bytes of its `.syncdignore` (None: none, or not here), both from
    the catalog; `local_path` is HOME/ignore."""

    def __init__(self, parent_of: Callable[[str], tuple[str | None, str]],
                 rule_file: Callable[[str], tuple[str, bytes] | None],
                 local_path: Path | None = None,
                 on_refused: Callable[[list[str]], None] = lambda why: None):
        """`on_refused` is told each time what is refused changes: why, for each file."""
        self.parent_of = parent_of
        self.rule_file = rule_file
        self.local_path = local_path
        self.on_refused = on_refused
        self.refused: dict[str, str] = {}  # rule file -> why
        self._logged: set[str] = set()
        self._parsed: dict[tuple[str, str], pathspec.GitIgnoreSpec | None] = {}
        self._why: dict[tuple[str, str], str] = {}  # of those refused
        self._dirs: dict[str, _Dir] = {}
        self._local: pathspec.GitIgnoreSpec | None = None
        self._local_stamp: tuple | None = None
        self.read_local()

    @functools.cached_property
    def defaults(self) -> pathspec.GitIgnoreSpec:
        return _spec(DEFAULTS)

    def invalidate(self) -> None:
        """A rule file or a directory's place changed: decide afresh from now on (the
        `.syncdignore` files refused are found again as their directories are)."""
        self._dirs.clear()
        local = str(self.local_path)
        self._set_refused({k: v for k, v in self.refused.items() if k == local})

    def forget(self) -> None:
        """A transaction rolled back: decide afresh, as after invalidate, but write
        nothing now (the rollback took back the record of the files refused, with the
        rest; it is written again when they are found)."""
        self._dirs.clear()
        local = str(self.local_path)
        self.refused = {k: v for k, v in self.refused.items() if k == local}

    def local_stamp(self) -> tuple | None:
        """What says HOME/ignore changed: its inode, size and mtime (None: no file)."""
        try:
            st = self.local_path.stat() if self.local_path else None
        except FileNotFoundError:
            return None
        except OSError as e:  # reading it says why, and refuses it
            return ("unreadable", e.errno)
        return None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns)

    def read_local(self) -> bool:
        """Read HOME/ignore again if it changed; True when it did."""
        stamp = self.local_stamp()
        if stamp == self._local_stamp:
            return False
        self._local_stamp = stamp
        self._local = None
        where = str(self.local_path)
        self._set_refused({k: v for k, v in self.refused.items() if k != where})
        if stamp is not None:
            try:
                self._local = self._compile(where, self.local_path.read_bytes(), True)
            except OSError as e:
                self._refuse(where, f"{where}: {e.strerror}")
        self.invalidate()
        return True

    def ignored(self, dir_node: str, name: str, kind: str) -> bool:
        """Is `name` in directory `dir_node` ignored by the rules?"""
        if name == IGNORE_FILE and kind == "file":
            return False
        d = self._dir(dir_node)
        return d.ignored or self._decide(d, name, kind == "dir")

    def _decide(self, d: _Dir, name: str, is_dir: bool) -> bool:
        if d.checks is None:
            joined: list[tuple[str, pathspec.GitIgnoreSpec]] = []
            for base, spec in [("", self.defaults), *d.specs,
                               *([("", self._local)] if self._local else [])]:
                if joined and joined[-1][0] == base:  # later lines win, as in one file
                    spec = joined.pop()[1] + spec
                joined.append((base, spec))
            d.checks = [(base, spec, _any_rule(spec)) for base, spec in joined]
        path = d.path + name + ("/" if is_dir else "")
        result = False
        for base, spec, any_rule in d.checks:
            within = path[len(base):]
            if any_rule.match(within) is None:  # nearly every name: no rule of it matches
                continue
            include = spec.check_file(within).include
            if include is not None:
                result = include
        return result

    def _dir(self, node: str) -> _Dir:
        d = self._dirs.get(node)
        if d is not None:
            return d
        if node == ROOT_ID:
            d = _Dir("", [], False)
        else:
            parent, name = self.parent_of(node)
            above = self._dir(parent or ROOT_ID)
            d = _Dir(above.path + name + "/", list(above.specs),
                     above.ignored or self._decide(above, name, True), above.checks)
        found = self.rule_file(node)
        if found is not None:
            where = d.path + IGNORE_FILE
            spec = self._parsed_file(where, *found, node == ROOT_ID)
            if spec is not None:
                d.specs.append((d.path, spec))
                d.checks = None
            elif where not in self.refused:  # parsed before, refused then
                self._refuse(where, self._why[where, found[0]])
        self._dirs[node] = d
        return d

    def _parsed_file(self, where: str, digest: str, text: bytes,
                     at_root: bool) -> pathspec.GitIgnoreSpec | None:
        key = (where, digest)
        if key not in self._parsed:
            self._parsed[key] = self._compile(where, text, at_root)
            if self._parsed[key] is None:
                self._why[key] = self.refused[where]
        return self._parsed[key]

    def _compile(self, where: str, text: bytes, at_root: bool) -> pathspec.GitIgnoreSpec | None:
        try:
            spec = parse(text, where, at_root)
        except RuleError as e:
            self._refuse(where, str(e))
            return None
        self._set_refused({k: v for k, v in self.refused.items() if k != where})
        return spec

    def _refuse(self, where: str, why: str) -> None:
        if why not in self._logged:
            log.error("ignore rules refused, none of this file applies: %s", why)
            self._logged.add(why)
        self._set_refused({**self.refused, where: why})

    def _set_refused(self, refused: dict[str, str]) -> None:
        if refused != self.refused:
            self.refused = refused
            self.on_refused(sorted(refused.values()))
