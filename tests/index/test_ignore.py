"""Ignore rules between real indexes (index/ignore.py, index/rescan.py): what they
ignore is never sent, left alone when peers' states arrive, decided afresh when the
rules change, and goes with a directory a peer deletes."""

from __future__ import annotations

import logging

import pytest
from syncd.index.ignore import RuleError, parse
from syncd.index.rescan import Rescan
from syncd.index.schema import ROOT_ID
from syncd.index.states import changes_since

from tests.replicas import ROOT, T, check_invariants, converge, send


def sent_paths(dev) -> set[str]:
    return {s["name"] for s in changes_since(dev.cat.conn, 0, 10_000)[0]}


def rescan(dev) -> None:
    """What the serving process does when rules change (syncd/ignoring.py)."""
    r = Rescan(dev.cat)
    r.add(ROOT_ID)
    while r.step(budget=3):  # small batches: the walk resumes within a directory
        pass
    dev.merger.release_held()


def test_rules_and_defaults_keep_entries_here(devs):
    a, b, _ = devs
    a.write(".syncdignore", b"build/\n*.o\n!keep.o\n", T)
    a.mkdir("build")
    a.write("build/out.bin", b"out", T)
    a.mkdir("src")
    a.write("src/x.o", b"obj", T)
    a.write("src/keep.o", b"kept", T)
    a.write("src/.x.c.swp", b"swap", T)  # a default rule
    a.write("src/db.sqlite-wal", b"wal", T)  # not ignored: travels with its database
    send(a, b)
    assert set(b.tree()) == {"/.syncdignore", "/src", "/src/keep.o", "/src/db.sqlite-wal"}
    assert {"build", "out.bin", "x.o", ".x.c.swp"}.isdisjoint(sent_paths(a))
    assert a.cat.local_only_files() == 3 and b.cat.local_only_files() == 0
    # beta ignores alike: its own build output stays there
    b.mkdir("build")
    b.write("build/b.bin", b"b", T)
    send(b, a)
    assert "/build/b.bin" not in a.tree() and "/build/out.bin" in a.tree()
    check_invariants(a.cat)
    check_invariants(b.cat)


def test_peer_states_for_ignored_paths_are_left_alone(devs, tmp_path):
    a, b, _ = devs
    a.mkdir("logs")
    a.write("logs/app.log", b"alpha's", T)
    converge(a, b)
    # beta ignores logs/ by a rule of its own that alpha does not have
    (tmp_path / "ignore").write_text("logs/\n")
    b.cat.ignore.local_path = tmp_path / "ignore"
    assert b.cat.ignore.read_local()
    rescan(b)
    a.write("logs/app.log", b"alpha's newer", T + 1)
    a.write("logs/new.log", b"new", T)
    send(a, b)
    assert b.data("logs/app.log") == b"alpha's" and "/logs/new.log" not in b.tree()
    b.write("logs/app.log", b"beta's own", T + 2)
    send(b, a)
    assert a.data("logs/app.log") == b"alpha's newer"  # beta's stays there
    check_invariants(b.cat)


def test_rule_changes_stop_and_start_syncing_without_deleting(devs):
    a, b, _ = devs
    a.mkdir("out")
    a.write("out/f", b"1", T)
    a.write("notes.txt", b"n", T)
    converge(a, b)
    a.write(".syncdignore", b"out/\n", T)
    rescan(a)
    send(a, b)
    rescan(b)
    a.write("out/f", b"2", T + 1)  # ignored now: stays here
    a.write("out/g", b"new", T)
    send(a, b)
    assert b.data("out/f") == b"1" and "/out/g" not in b.tree()
    assert a.data("out/f") == b"2"  # nothing deleted anywhere
    a.cat.unlink(a.ino(""), ".syncdignore")
    rescan(a)
    send(a, b)
    rescan(b)
    converge(a, b)  # un-ignored: alpha's are sent, the same on both
    assert b.data("out/f") == b"2" and b.data("out/g") == b"new"


def test_rename_into_and_out_of_ignored_paths(devs):
    a, b, _ = devs
    a.write(".syncdignore", b"tmp/\n", T)
    a.mkdir("tmp")
    a.mkdir("d")
    a.write("d/f", b"f", T)
    converge(a, b)
    a.cat.rename(a.ino("d"), "f", a.ino("tmp"), "f")  # into: stops syncing, peers keep it
    send(a, b)
    assert b.data("d/f") == b"f" and "/tmp/f" not in b.tree()
    a.write("tmp/made", b"m", T)
    a.cat.rename(a.ino("tmp"), "made", a.ino("d"), "made")  # out: sent as new
    a.cat.rename(a.ino("tmp"), "f", ROOT, "back")
    send(a, b)
    assert b.data("d/made") == b"m" and b.data("back") == b"f" and "/d/f" not in b.tree()
    converge(a, b)


def test_peer_deleting_a_directory_takes_ignored_entries_with_it(devs):
    a, b, _ = devs
    a.write(".syncdignore", b"*.tmp\ncache/\n", T)
    a.mkdir("d")
    a.write("d/keep", b"k", T)
    converge(a, b)
    b.write("d/x.tmp", b"beta only", T)
    b.mkdir("d/cache")
    b.mkdir("d/cache/deep")
    b.write("d/cache/deep/c", b"c", T)
    a.cat.unlink(a.ino("d"), "keep")
    a.cat.rmdir(ROOT, "d")
    send(a, b)
    assert "/d" not in b.tree() and "/d" not in a.tree()
    check_invariants(b.cat)


@pytest.mark.parametrize("text,line", [
    (b"ok\n*\n", 2), (b"# c\n\n/**\n", 3), (b"**/\n", 1), (b"a\n!\n", 2), (b"/\n", 1),
    (b"x\n\xff\n", 2),
])
def test_bad_root_rules_are_refused_naming_the_line(text, line):
    with pytest.raises(RuleError, match=rf"^\.syncdignore, line {line}: "):
        parse(text, ".syncdignore", True)


def test_a_refused_file_applies_nothing(devs, expect_log):
    a, b, _ = devs
    expect_log(r"ignore rules refused, none of this file applies: \.syncdignore, line 2")
    a.write(".syncdignore", b"*.o\n*\n", T)
    a.write("x.o", b"o", T)
    a.write("y", b"y", T)
    send(a, b)
    assert {"/x.o", "/y"} <= set(b.tree())
    assert a.cat.ignore.refused == {".syncdignore": ".syncdignore, line 2: '*' would "
                                    "ignore everything in the share"}
    logging.getLogger().info("done")


def test_deeper_rule_files_win_and_may_ignore_all_of_their_directory(devs):
    a, b, _ = devs
    a.write(".syncdignore", b"*.log\n", T)
    a.mkdir("keep")
    a.write("keep/.syncdignore", b"!*.log\n", T)  # re-included here
    a.mkdir("scratch")
    a.write("scratch/.syncdignore", b"*\n", T)  # allowed below the root
    a.write("x.log", b"x", T)
    a.write("keep/y.log", b"y", T)
    a.write("scratch/z", b"z", T)
    send(a, b)
    assert set(b.tree()) == {"/.syncdignore", "/keep", "/keep/.syncdignore", "/keep/y.log",
                             "/scratch", "/scratch/.syncdignore"}
    assert a.cat.ignore.refused == {}


def test_a_rule_file_over_16_kib_is_refused(devs, expect_log):
    a, b, _ = devs
    expect_log(r"ignore rules refused, none of this file applies: \.syncdignore: over 16384")
    a.write(".syncdignore", b"*.o\n" + b"#" * 16384 + b"\n", T)
    a.write("x.o", b"o", T)
    send(a, b)
    assert "/x.o" in b.tree()
    assert a.cat.refused_rules() == [".syncdignore: over 16384 bytes"]


def test_held_states_apply_once_the_rules_stop_ignoring(devs, tmp_path):
    a, b, _ = devs
    (tmp_path / "ignore").write_text("cache/\n")
    b.cat.ignore.local_path = tmp_path / "ignore"
    b.cat.ignore.read_local()
    a.mkdir("cache")
    a.write("cache/c", b"alpha's", T)
    send(a, b)
    assert "/cache" not in b.tree()
    (tmp_path / "ignore").write_text("")
    assert b.cat.ignore.read_local()
    rescan(b)
    assert b.data("cache/c") == b"alpha's"
    converge(a, b)


def test_an_unreadable_home_ignore_is_refused_and_ignores_nothing(devs, tmp_path, expect_log):
    a, _, _ = devs
    expect_log(r"ignore rules refused, none of this file applies: .*ignore: Is a directory")
    (tmp_path / "ignore").mkdir()
    a.cat.ignore.local_path = tmp_path / "ignore"
    assert a.cat.ignore.read_local()
    assert a.cat.refused_rules() == [f"{tmp_path / 'ignore'}: Is a directory"]
    a.write("x", b"x", T)
    assert "x" in sent_paths(a)
    (tmp_path / "ignore").rmdir()
    assert a.cat.ignore.read_local() and a.cat.refused_rules() == []


def test_one_expression_for_a_spec_decides_as_its_rules_do():
    """IgnoreRules checks a name against one expression of all of a spec's rules before
    asking them one by one: it must match exactly the paths some rule matches, or a name
    would be decided wrongly (negations, anchors, directory rules and classes included)."""
    import pathspec
    from syncd.index.ignore import DEFAULTS, IgnoreRules, _any_rule, _spec

    lines = [*DEFAULTS, "build/", "/top.txt", "*.log", "!keep.log", "docs/**/draft-*",
             "[Tt]mp?", "a/b/c", "\\#hash", "**/cache/*.bin", "!**/cache/ok.bin"]
    spec = _spec(lines)
    assert isinstance(spec, pathspec.GitIgnoreSpec)
    paths = ["top.txt", "x/top.txt", "build/", "build", "x/build/", "a.log", "keep.log",
             "x/keep.log", "docs/x/y/draft-1", "docs/draft-1", "Tmp1", "tmpA", "tmp",
             "a/b/c", "x/a/b/c", "#hash", "z/cache/f.bin", "z/cache/ok.bin", "ok.txt",
             "a.swp", ".Trashes/", ".Trashes", "Thumbs.db", "d/e/f", ".nfs1"]
    one = _any_rule(spec)
    for path in paths:
        some = any(p.regex is not None and p.regex.match(path) for p in spec.patterns)
        assert (one.match(path) is not None) == some, path

    rules = IgnoreRules(lambda node: (None, node), lambda node: None)
    rules._local = _spec(lines[len(DEFAULTS):])
    for name in ["a.log", "keep.log", "build", "top.txt", "Tmp1", "ok.txt", "x.swp"]:
        for kind in ("file", "dir"):
            path = name + ("/" if kind == "dir" else "")
            expected = False
            for spec_ in (rules.defaults, rules._local):
                include = spec_.check_file(path).include
                if include is not None:
                    expected = include
            assert rules.ignored(ROOT_ID, name, kind) == expected, (name, kind)
