"""manifest.json: what an image is. Written by `bankboot image`, checked wherever it is read."""

from __future__ import annotations

from overlay_layout import jsontext
from overlay_layout.contract import ETC, IMAGE_BOOT, TLS_PIECE, is_absolute_path, is_name
from overlay_layout.layout import Layout, LayoutError, check_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from overlay_layout.records import KernelInfo, Manifest, PreflightInfo

MAX_MANIFEST = 65536  # a manifest is a few kB; a bigger one is not one of ours
FIELDS = {"id": str, "version": str, "arch": str, "size": int, "sha256": str, "created": str}
FORMAT = 1
VERITY_FIELDS = {"root_hash": str, "salt": str, "hash_algorithm": str, "data_block_size": int,
                 "hash_block_size": int, "size": int, "sha256": str}
VERITY_BLOCK_SIZES = (512, 1024, 2048, 4096)  # what dm-verity takes on every board's page size
MAX_PERSIST = 32
# Paths that hold the image's init, its libraries or bankboot's own files (persisting them would let a
# file on the banks partition shadow signed code), and the mounts the init hands over.
NEVER_PERSIST = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/usr", ETC, "/boot", "/proc", "/sys",
                 "/dev", "/run")


# What a persistent path may allow beyond the default nosuid,nodev (bankboot image --persist /var:suid,dev).
PERSIST_ALLOW = ("dev", "suid")


def split_persist(entry: str) -> tuple[str, tuple[str, ...]]:
    """A persistence policy entry (`/var` or `/var:suid,dev`): its path and what it allows beyond nosuid,nodev.
    Entries come from check_persist, which wrote them canonically."""
    path, _, allow = entry.partition(":")
    return path, tuple(a for a in allow.split(",") if a)


def persist_mount_options(entry: str) -> str:
    """How the init mounts an entry's path, as mount(8) would say it: `nosuid,nodev`, `nodev`, ..."""
    allow = split_persist(entry)[1]
    return ",".join(o for o, a in (("nosuid", "suid"), ("nodev", "dev")) if a not in allow) or "suid,dev"


def describe_persist(entries: list[str]) -> str:
    """A policy for people (bankboot image, inspect, bankctl status): `/etc (nosuid,nodev) /var (nodev)`."""
    return " ".join(f"{split_persist(e)[0]} ({persist_mount_options(e)})" for e in entries)


def check_persist(paths: object, where: str) -> list[str]:
    """A persistence policy: absolute, normalised directory paths, none inside another, none holding signed
    code the init relies on, each optionally allowing setuid files (`:suid`) or device nodes (`:dev`), which
    a persistent path otherwise never honours. Returns the entries canonical (`/var:dev,suid`) and sorted by
    path; LayoutError names the first one at fault."""
    if not isinstance(paths, list) or not paths or len(paths) > MAX_PERSIST:
        raise LayoutError(f"{where}: 'persist' must be a list of 1 to {MAX_PERSIST} absolute paths")
    out: list[tuple[str, tuple[str, ...]]] = []
    for entry in paths:
        if not isinstance(entry, str):
            raise LayoutError(f"{where}: persistent path {entry!r} must be an absolute path")
        p, allow = split_persist(entry)
        if not is_absolute_path(p) or any(part in (".", "..") for part in p.split("/")):
            raise LayoutError(f"{where}: persistent path {p!r} must be an absolute, normalised path of letters, "
                              f"digits and . _ + @ - (not / itself)")
        unknown = [a for a in allow if a not in PERSIST_ALLOW]
        if unknown or len(set(allow)) != len(allow) or (entry.count(":") and not allow):
            raise LayoutError(f"{where}: persistent path {entry!r}: after the path, ':' and a comma-separated list "
                              f"of {' and '.join(PERSIST_ALLOW)} (what it may hold beyond nosuid,nodev), each once")
        for bad in NEVER_PERSIST:
            if p == bad or p.startswith(bad + "/") or (bad.startswith(p + "/") and bad != ETC):
                raise LayoutError(f"{where}: persistent path {p} would let files on the banks partition shadow "
                                  f"signed code ({bad}); persist data directories such as /etc, /var or /root")
        out.append((p, tuple(sorted(allow))))
    out.sort()
    for i in range(1, len(out)):  # neighbours in order (itertools.pairwise would cost the boot an import)
        a, b = out[i - 1][0], out[i][0]
        if a == b or b.startswith(a + "/"):
            raise LayoutError(f"{where}: persistent paths {a} and {b} overlap; keep the outer one")
    return [p + (":" + ",".join(allow) if allow else "") for p, allow in out]


# An image's own kernel (kexec'd by the init on the boot partition, docs/lifecycle.md): its files live at
# these paths inside the image's squashfs, so the signature and verity cover them.
# The TLS piece built with that initramfs goes beside it (overlay_layout/net/tlspiece.py).
KERNEL_FILES = {"image": "/boot/bankboot/kernel", "initramfs": "/boot/bankboot/initramfs.img",
                "tls": f"{IMAGE_BOOT}/{TLS_PIECE}"}


def check_kernel(k: object, where: str) -> KernelInfo:
    """The `kernel` object: release and build strings (`uname -r`, `uname -v`), the files with their size and
    sha256, extra command-line words. LayoutError names the field at fault."""
    if not isinstance(k, dict):
        raise LayoutError(f"{where}: 'kernel' must be an object")
    if not isinstance(k.get("release"), str) or not is_name(k["release"], 64):
        raise LayoutError(f"{where}: 'kernel.release' must be a kernel release such as 6.1.0-50-arm64")
    if not isinstance(k.get("version"), str) or not 0 < len(k["version"]) <= 200 or "\n" in k["version"]:
        raise LayoutError(f"{where}: 'kernel.version' must be the kernel's `uname -v` (one line)")
    for name, path in KERNEL_FILES.items():
        f = k.get(name)
        if f is None and name != "image":
            continue
        if not isinstance(f, dict) or f.get("path") != path:
            raise LayoutError(f"{where}: 'kernel.{name}' must be an object with path {path}")
        if not isinstance(f.get("size"), int) or isinstance(f.get("size"), bool) or f["size"] <= 0:
            raise LayoutError(f"{where}: 'kernel.{name}.size' must be a positive integer")
        digest = f.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise LayoutError(f"{where}: 'kernel.{name}.sha256' must be 64 lowercase hex digits")
    append = k.get("append", "")
    if not isinstance(append, str) or len(append) > 1024 or any(c in append for c in "\n\0") \
            or "bankboot.kexec" in append:
        raise LayoutError(f"{where}: 'kernel.append' must be one line of kernel parameters (at most 1024 "
                          f"characters, no bankboot.kexec)")
    unknown = set(k) - {"release", "version", "append", *KERNEL_FILES}
    if unknown:
        raise LayoutError(f"{where}: unknown field(s) in 'kernel': {', '.join(sorted(unknown))}")
    return k  # type: ignore[return-value]  # checked field by field above


MAX_PREFLIGHT_RANGES = 4096
PREFLIGHT_ALIGN = 4096  # whole dm-verity blocks


def check_preflight(p: object, size: int, where: str) -> PreflightInfo:
    """`preflight`: the image's init (an absolute path) and the byte ranges of the squashfs holding it and
    the files it needs (initfs/preflight.py): sorted, apart, whole 4096-byte blocks, inside the image."""
    if not isinstance(p, dict) or set(p) != {"init", "ranges"} or not isinstance(p["init"], str) \
            or not p["init"].startswith("/") or len(p["init"]) > 4096 or not isinstance(p["ranges"], list) \
            or len(p["ranges"]) > MAX_PREFLIGHT_RANGES:
        raise LayoutError(f"{where}: 'preflight' must be an object with an absolute 'init' and at most "
                          f"{MAX_PREFLIGHT_RANGES} 'ranges'")
    end = 0
    for r in p["ranges"]:
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
                and r[0] >= end and r[1] > 0 and r[0] % PREFLIGHT_ALIGN == 0 and r[1] % PREFLIGHT_ALIGN == 0
                and r[0] + r[1] <= size):
            raise LayoutError(f"{where}: 'preflight.ranges' must be sorted, apart [offset, length] pairs of "
                              f"whole {PREFLIGHT_ALIGN}-byte blocks inside the image's {size} bytes; {r!r} is not")
        end = r[0] + r[1]
    return p  # type: ignore[return-value]  # checked field by field above


def read_installed(layout: Layout, image: str) -> Manifest:
    """The manifest of an image on the banks partition, checked like a bank's (at most MAX_MANIFEST bytes
    are read: a bank file's manifest is never bigger). OSError when it cannot be read, LayoutError when it
    is not a manifest."""
    path = layout.manifest_path(image)
    with open(path, "rb") as f:
        return parse_manifest(f.read(MAX_MANIFEST), path)


def parse_manifest(data: bytes, where: str) -> Manifest:
    try:
        m = jsontext.loads(data)
    except (ValueError, RecursionError) as e:
        raise LayoutError(f"{where}: not valid JSON: {e}") from e
    if not isinstance(m, dict):
        raise LayoutError(f"{where}: must be a JSON object")
    if m.get("format") != FORMAT:
        raise LayoutError(f"{where}: unknown manifest format {m.get('format')!r} (this bankboot reads {FORMAT})")
    for key, kind in FIELDS.items():
        if not isinstance(m.get(key), kind) or isinstance(m.get(key), bool):
            raise LayoutError(f"{where}: {key!r} must be a {kind.__name__}")
    check_id(m["id"])
    if len(m["sha256"]) != 64 or any(c not in "0123456789abcdef" for c in m["sha256"]):
        raise LayoutError(f"{where}: 'sha256' must be 64 lowercase hex digits")
    if m["size"] <= 0:
        raise LayoutError(f"{where}: 'size' must be positive")
    v = m.get("verity")
    if v is not None:
        if not isinstance(v, dict):
            raise LayoutError(f"{where}: 'verity' must be an object")
        for key, kind in VERITY_FIELDS.items():
            if not isinstance(v.get(key), kind) or isinstance(v.get(key), bool):
                raise LayoutError(f"{where}: 'verity.{key}' must be a {kind.__name__}")
        for key in ("root_hash", "salt", "sha256"):
            if any(c not in "0123456789abcdef" for c in v[key]):
                raise LayoutError(f"{where}: 'verity.{key}' must be lowercase hex")
        # The numbers the init hands to the kernel, bounded here so a signed manifest cannot describe a
        # mapping the files do not back (each is also checked against the files before use).
        if v["hash_algorithm"] != "sha256" or len(v["root_hash"]) != 64 or len(v["sha256"]) != 64:
            raise LayoutError(f"{where}: 'verity' must use sha256 with a 64-digit root hash")
        if len(v["salt"]) % 2 or len(v["salt"]) > 512:
            raise LayoutError(f"{where}: 'verity.salt' must be an even number of hex digits, at most 512")
        for key in ("data_block_size", "hash_block_size"):
            if v[key] not in VERITY_BLOCK_SIZES:
                raise LayoutError(f"{where}: 'verity.{key}' must be one of {VERITY_BLOCK_SIZES}, not {v[key]}")
        if m["size"] % v["data_block_size"]:
            raise LayoutError(f"{where}: 'size' {m['size']} is not a whole number of "
                              f"{v['data_block_size']}-byte verity blocks")
        if v["size"] <= 0:
            raise LayoutError(f"{where}: 'verity.size' must be positive")
    if "persist" in m:
        m["persist"] = check_persist(m["persist"], where)
    if "kernel" in m:
        check_kernel(m["kernel"], where)
    c = m.get("chunks")
    if c is not None and (not isinstance(c, dict) or set(c) != {"size", "sha256", "count"}
                          or not all(isinstance(c[k], int) and not isinstance(c[k], bool) and c[k] > 0
                                     for k in ("size", "count"))
                          or not isinstance(c["sha256"], str) or len(c["sha256"]) != 64
                          or any(ch not in "0123456789abcdef" for ch in c["sha256"])):
        raise LayoutError(f"{where}: 'chunks' must be an object with a positive size and count and a sha256")
    if "confirm_boots" in m and not isinstance(m["confirm_boots"], bool):
        raise LayoutError(f"{where}: 'confirm_boots' must be true or false")
    if "preflight" in m:
        check_preflight(m["preflight"], m["size"], where)
    for key in ("min_bankboot", "key", "signature"):
        if key in m and not isinstance(m[key], str):
            raise LayoutError(f"{where}: {key!r} must be a string")
    if "signatures" in m:
        if "signature" in m or "key" in m:
            raise LayoutError(f"{where}: a manifest has either 'signatures' or the older 'key' and 'signature', "
                              f"not both")
        check_signatures(m["signatures"], where)
    if "key_updates" in m:
        from overlay_layout.keychain import parse_chain
        from overlay_layout.trust import TrustError

        try:
            parse_chain(m["key_updates"], where)
        except TrustError as e:
            raise LayoutError(str(e)) from e
    if "encryption" in m:
        check_encryption(m["encryption"], m, where)
    private = [k for k in m if k.startswith("_")]
    if private:
        raise LayoutError(f"{where}: field {private[0]!r}: names starting with _ are never stored in a manifest")
    return m  # type: ignore[return-value]  # checked field by field above


MAX_SIGNATURES = 16


def _is_hex(text: object, digits: int) -> bool:
    return isinstance(text, str) and len(text) == digits and all(c in "0123456789abcdef" for c in text)


def check_signatures(sigs: object, where: str) -> None:
    """A `signatures` list (a manifest's, a key update's): 1 to MAX_SIGNATURES objects {key: 16 hex digits,
    signature: 128}. The same key twice is allowed here and counted once by the verifier."""
    if not isinstance(sigs, list) or not 0 < len(sigs) <= MAX_SIGNATURES or not all(
            isinstance(s, dict) and set(s) == {"key", "signature"} and _is_hex(s["key"], 16)
            and _is_hex(s["signature"], 128) for s in sigs):
        raise LayoutError(f"{where}: 'signatures' must be a list of 1 to {MAX_SIGNATURES} objects with a 'key' "
                          f"(16 hex digits) and a 'signature' (128)")


CIPHER = "xchacha20poly1305-chunks"  # overlay_layout/encryption.py
MAX_RECIPIENTS = 64
SEALED_KEY_HEX = 160  # a libsodium sealed box of a 32-byte key: 48 + 32 bytes


def check_encryption(e: object, m: dict[str, object], where: str) -> None:
    """`encryption`: the cipher, and the content key sealed to each recipient's X25519 key. An encrypted
    image has a hash tree and a chunk index (its squashfs is encrypted chunk by chunk)."""
    if not isinstance(e, dict) or set(e) != {"cipher", "recipients"} or e["cipher"] != CIPHER:
        raise LayoutError(f"{where}: 'encryption' must be an object with 'cipher' {CIPHER!r} and 'recipients' "
                          f"(this bankboot reads no other cipher)")
    r = e["recipients"]
    if not isinstance(r, list) or not 0 < len(r) <= MAX_RECIPIENTS or not all(
            isinstance(x, dict) and set(x) == {"key", "sealed"} and _is_hex(x["key"], 16)
            and _is_hex(x["sealed"], SEALED_KEY_HEX) for x in r):
        raise LayoutError(f"{where}: 'encryption.recipients' must be 1 to {MAX_RECIPIENTS} objects with a 'key' "
                          f"(16 hex digits) and its 'sealed' content key ({SEALED_KEY_HEX} hex digits); for more "
                          f"devices, encrypt to a fleet key")
    if len({x["key"] for x in r}) != len(r):
        raise LayoutError(f"{where}: 'encryption.recipients' names a key twice")
    if "chunks" not in m or "verity" not in m:
        raise LayoutError(f"{where}: an encrypted image must have a hash tree and a chunk index")


def dump_manifest(m: Mapping[str, object]) -> bytes:
    """Canonical bytes: sorted keys, no spaces, one trailing newline."""
    return jsontext.dumps(m, sort_keys=True).encode() + b"\n"
