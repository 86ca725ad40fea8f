"""A property added to a flattened device tree (the .dtb format), in the way a board's firmware adds to the
tree it hands the kernel. Needed for one thing: the Raspberry Pi's firmware puts `/chosen/rng-seed` (bytes
from the SoC's hardware RNG) into the tree before it starts the kernel, which then initialises its random
pool at once; QEMU's raspi machines load the kernel package's .dtb as it is, without one, so Python's start
in the init waited 1-2 s in getrandom() for a pool no real Pi makes it wait for (builder/lab/boot.py).
The format: devicetree-specification, "Flattened Devicetree (DTB) Format"."""

from __future__ import annotations

import struct

from builder.errors import BuildError

MAGIC = 0xD00DFEED
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9
HEADER = struct.Struct(">10I")


class DeviceTreeError(BuildError, ValueError):
    pass


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _chosen_properties(tree: bytes, strings: bytes) -> tuple[int, int, set[str]]:
    """(where /chosen's properties start or -1, where the root node ends, /chosen's property names)."""
    pos, depth, chosen, in_chosen = 0, 0, -1, False
    names: set[str] = set()
    while pos + 4 <= len(tree):
        (token,) = struct.unpack_from(">I", tree, pos)
        pos += 4
        if token == BEGIN_NODE:
            end = tree.index(b"\0", pos)
            name = tree[pos:end]
            pos = end + 1 + (-(end + 1) % 4)
            depth += 1
            in_chosen = depth == 2 and name == b"chosen"
            if in_chosen:
                chosen = pos
        elif token == END_NODE:
            depth -= 1
            in_chosen = False
            if depth == 0:
                return chosen, pos - 4, names
        elif token == PROP:
            size, nameoff = struct.unpack_from(">II", tree, pos)
            if in_chosen:
                names.add(strings[nameoff:strings.index(b"\0", nameoff)].decode())
            pos += 8 + size + (-size % 4)
        elif token == NOP:
            continue
        else:
            break
    raise DeviceTreeError("the device tree's structure block is damaged (no end to its root node)")


def set_chosen(blob: bytes, name: str, value: bytes) -> bytes:
    """`blob` with /chosen/`name` = `value` (/chosen made when missing); a tree that already has the property
    is returned as it is (a firmware's own value stands)."""
    if len(blob) < HEADER.size or HEADER.unpack_from(blob)[0] != MAGIC:
        raise DeviceTreeError("not a flattened device tree (no d00dfeed magic)")
    (_, total, off_struct, off_strings, off_rsv, version, _, cpu, size_strings, size_struct) = HEADER.unpack_from(blob)
    if version < 17 or max(off_struct + size_struct, off_strings + size_strings) > total or total > len(blob):
        raise DeviceTreeError(f"a device tree of version {version} or with blocks outside it: not supported")
    tree, strings = blob[off_struct:off_struct + size_struct], blob[off_strings:off_strings + size_strings]
    rsv_end = off_rsv
    while struct.unpack_from(">QQ", blob, rsv_end) != (0, 0):
        rsv_end += 16
    reservations = blob[off_rsv:rsv_end + 16]
    chosen, root_end, names = _chosen_properties(tree, strings)
    if name in names:
        return blob
    prop = struct.pack(">III", PROP, len(value), len(strings)) + _pad(value)
    strings += name.encode() + b"\0"
    if chosen >= 0:
        tree = tree[:chosen] + prop + tree[chosen:]
    else:
        node = struct.pack(">I", BEGIN_NODE) + _pad(b"chosen\0") + prop + struct.pack(">I", END_NODE)
        tree = tree[:root_end] + node + tree[root_end:]
    off_rsv = (HEADER.size + 7) // 8 * 8
    off_struct = off_rsv + len(reservations)
    off_strings = off_struct + len(tree)
    total = off_strings + len(strings)
    header = HEADER.pack(MAGIC, total, off_struct, off_strings, off_rsv, 17, 16, cpu, len(strings), len(tree))
    return header.ljust(off_rsv, b"\0") + reservations + tree + strings
