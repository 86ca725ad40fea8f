"""The TLS piece: OpenSSL (libcrypto, libssl) and Python's `_ssl` extension for the kit's Python, packed
apart from the initramfs so that no boot pays for them (the kernel never unpacks them, the init never
loads them; 2 MB packed, 5.5 MB unpacked on arm64). The builder writes it beside the initramfs
(`initramfs.tls`) and records its sha256 in initramfs.conf (`tls=`); only `bankctl stage https://` opens
it: it checks the sha256 against the kit's initramfs.conf before it reads a byte of the contents, so the
piece can be read from any place (the boot partition, the running image) without being trusted.

Format: a magic line, one line of JSON ({"arch": ..., "python": ..., "files": [[name, size], ...]}),
then one zlib stream of the files' bytes in that order. Opening it decompresses each file into a memfd
(anonymous memory: nothing is written to any filesystem, nothing is left behind), loads the libraries
with `_bankboot`'s load_global (RTLD_GLOBAL, so `_ssl`'s DT_NEEDED entries resolve to them by soname),
imports `_ssl` from its memfd and runs the piece's base64.py and ssl.py (the sysroot's own); `import ssl` then
works as anywhere else."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zlib

from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAGIC = b"bankboot-tls 1\n"
NAME_IN_PIECE = "tls-piece"
LIBRARIES = ("libcrypto.so.3", "libssl.so.3")  # loaded in this order
EXTENSIONS = ("_ssl", "_hashlib")  # imported after them (_hashlib: OpenSSL's SHA-256, overlay_layout/hashing.py)
# Python source, run after them in this order (in the frozen archive they would cost every boot's unpack):
# ssl.py, and base64.py, which ssl.py imports and nothing the frozen program carries does.
MODULES = ("base64", "ssl")


class PieceError(BankbootError):
    pass


def pack(files: list[tuple[str, bytes]], arch: str, python: str) -> bytes:
    """The piece holding `files` (library and extension file names as LIBRARIES and EXTENSIONS name them)."""
    header = {"arch": arch, "python": python, "files": [[name, len(data)] for name, data in files]}
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + zlib.compress(b"".join(d for _, d in files), 9)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(data: bytes, want: str, where: str) -> tuple[dict[str, object], list[tuple[str, bytes]]]:
    """(header, files) of a piece whose sha256 must be `want`."""
    if digest(data) != want:
        raise PieceError(f"{where} is not the TLS piece this bankctl was built with (sha256 {digest(data)[:16]}..., "
                         f"initramfs.conf says {want[:16]}...)")
    if not data.startswith(MAGIC):
        raise PieceError(f"{where}: not a bankboot TLS piece")
    line, _, packed = data[len(MAGIC):].partition(b"\n")
    try:
        header = json.loads(line)
        names = [(str(n), int(s)) for n, s in header["files"]]
        blob = zlib.decompress(packed)
    except (ValueError, KeyError, TypeError, zlib.error) as e:
        raise PieceError(f"{where}: a damaged TLS piece ({e})") from e
    if sum(s for _, s in names) != len(blob):
        raise PieceError(f"{where}: a damaged TLS piece (its files do not add up)")
    files, pos = [], 0
    for name, size in names:
        files.append((name, blob[pos:pos + size]))
        pos += size
    return header, files


def install(files: list[tuple[str, bytes]]) -> None:
    """Load the piece's libraries and import its extensions into this process (see the module's docstring).
    The memfds stay open for the life of the process: the mappings need them."""
    from overlay_layout.native import api

    # The interpreter's own import machinery (always loaded): importlib.util would drag importlib.resources,
    # tempfile and random into the frozen program.
    bootstrap: Any = sys.modules["_frozen_importlib"]
    external: Any = sys.modules["_frozen_importlib_external"]
    by_name = dict(files)
    paths = {}
    for name, data in files:
        if name.endswith(".py"):
            continue
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        paths[name] = f"/proc/self/fd/{fd}"
    for lib in LIBRARIES:
        if lib not in by_name:
            raise PieceError(f"the TLS piece has no {lib}")
        try:
            api.load_global(paths[lib])
        except OSError as e:
            raise PieceError(f"the TLS piece's {lib} cannot be loaded: {e}") from None
    for ext in EXTENSIONS:
        found = [n for n in by_name if n.split(".")[0] == ext]
        if not found:
            raise PieceError(f"the TLS piece has no {ext} extension")
        name = found[0]
        loader = external.ExtensionFileLoader(ext, paths[name])
        module = bootstrap.module_from_spec(bootstrap.spec_from_loader(ext, loader, origin=paths[name]))
        loader.exec_module(module)
        sys.modules[ext] = module
    from overlay_layout.hashing import use_openssl

    use_openssl()
    for mod in MODULES:
        if f"{mod}.py" not in by_name:
            raise PieceError(f"the TLS piece has no {mod}.py")
        code = compile(by_name[f"{mod}.py"], f"<{NAME_IN_PIECE}>/{mod}.py", "exec", optimize=2)
        module = type(sys)(mod)
        sys.modules[mod] = module
        try:
            exec(code, module.__dict__)
        except ImportError as e:  # a module ssl.py needs that the frozen program does not carry
            del sys.modules[mod]
            raise PieceError(f"its {mod}.py needs the module {e.name}, which this bankctl does not carry "
                             f"(a build fault: tlspiece.MODULES or builder/freeze.py's HIDDEN_IMPORTS)") from e
        except BaseException:
            del sys.modules[mod]
            raise
