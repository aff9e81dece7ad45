"""Files nobody can read (soak bug 4): a live file whose content is not all here may be
held by no peer either, when its content's maker replaced or deleted that version before
anyone fetched it (a conflict copy made from metadata alone, a file a chmod or a move
brought back from its maker's delete). The daemon asks the peers (syncd/daemon.py,
drop_unheld) and drops such a file as this peer's delete when none holds it."""

from __future__ import annotations

from syncd.index.catalog import ASPECTS, Catalog
from syncd.index.chunklist import ChunkList
from syncd.index.effects import Effects
from syncd.index.node_rows import decided, entry_changed
from syncd.index.states import attrs_json, node_row, state_from_row


def missing_chunk(cat: Catalog, state: dict) -> bytes | None:
    """A chunk of the state's content that is not here, if any (a retired one counts as
    here: the fetcher takes it back)."""
    c = state["content"]
    chunks = ChunkList.from_hex(c["chunks"], c["size"])
    return next((d for d in cat.absent(chunks, c["size"]) if not cat.store.is_retired(d)),
                None)


def unheld_copies(cat: Catalog) -> list[str]:
    """Every conflict copy whose content is not all here: drop_unheld drops one when
    no peer holds its content either."""
    return [r[0] for r in cat.conn.execute(
        "SELECT n.id FROM nodes n JOIN inodes i ON i.ino = n.ino WHERE n.conflict_of"
        " IS NOT NULL AND n.deleted = 0 AND n.kind = 'file' AND i.local = 0")]


def unheld_file(cat: Catalog, node: str) -> tuple[str, bytes] | None:
    """For a live file whose content is not all here: the device that made its
    content, and a chunk of it that is missing here. None for any other node."""
    row = node_row(cat.conn, node)
    if row is None or row[4] or row[1] != "file":
        return None
    state = state_from_row(row)
    missing = missing_chunk(cat, state)
    return None if missing is None else (state["content"]["device"] or "", missing)


def drop_unheld(cat: Catalog, node: str) -> Effects | None:
    """Delete a file unheld_file names, as a change of this peer: the daemon found
    that no peer holds that chunk, its content's maker included (the maker replaced or
    deleted that version before anyone fetched it), so nobody can ever read the file.
    None when it is not such a file any more."""
    effects = Effects()

    def run() -> bool:
        if unheld_file(cat, node) is None:
            return False
        row = node_row(cat.conn, node)
        ino, parent, name, state = row[8], row[2], row[3], state_from_row(row)
        cat.conn.execute("UPDATE nodes SET deleted = 1, ino = NULL, deleted_mode = ?,"
                         " deleted_xattrs = ? WHERE id = ?",
                         (state["mode"]["mode"], attrs_json(state["xattr"]["attrs"]), node))
        effects.orphans.add(ino)
        # A writer that opened it with O_TRUNC keeps what it writes (rule 6).
        effects.detached[ino] = (node, state["content"]["vv"])
        decided(cat, node, "drop-unheld", ASPECTS)
        entry_changed(cat, parent, name, effects)
        return True

    if not cat.transaction(run):
        return None
    cat.detached.update(effects.detached)
    return effects
