"""`bankboot inspect FILE`: what a bank file or a disk image holds and whether it verifies, like
`rauc info`. A bank file is checked against `--trust` keys or what an initramfs would accept at boot; a
disk image (as `bankboot disk` writes it, or as read off a device's card) is checked image by image against
the initramfs on its own boot partition, read offline without mounting anything."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from builder.image import ImageError, read_bank
from initfs.version import VERSION
from overlay_layout.hashing import hash_file
from overlay_layout.layout import MANIFEST, SQUASHFS, VERITY, LayoutError
from overlay_layout.manifest import describe_persist, parse_manifest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from overlay_layout.records import Manifest

POINTERS = ("current", "next", "previous")


def is_disk(path: Path) -> bool:
    """A partitioned disk image (an MBR boot signature), not a bank file (a ustar archive)."""
    with open(path, "rb") as f:
        head = f.read(512)
    return len(head) == 512 and head[510:512] == b"\x55\xaa" and head[257:262] != b"ustar"


def verdict(where: Path, manifest: Manifest, keys: tuple[Path, ...], initramfs: Path | None,
            files_ok: bool, initramfs_name: str | None = None) -> tuple[str, bool]:
    """Would the device boot this image: against what `initramfs` accepts, else against `keys`."""
    from overlay_layout.trust import Policy, TrustError, key_id, read_public_key

    if initramfs is not None:
        from builder.disk import DiskError, check_bootable

        try:
            check_bootable(where, manifest, initramfs)
            text, ok = f"yes: {initramfs_name or initramfs} would boot it", files_ok
        except DiskError as e:
            text, ok = f"NO: {e}", False
    elif keys:
        try:
            trusted = {key_id(k): k for k in (read_public_key(str(p)) for p in keys)}
            who = Policy(trusted, allow_unsigned=False, allow_downgrade=False).check(manifest, VERSION)
            text, ok = f"yes: signed by {who}", files_ok
        except TrustError as e:
            text, ok = f"NO: {e}", False
    else:
        text, ok = "not checked (give --trust KEY.pub or --initramfs IMG)", files_ok
    if not files_ok:
        text += "; the squashfs or hash tree does NOT match its manifest"
    return text, ok


def _signed(manifest: Manifest) -> str:
    return f"key {manifest['key']}" if "signature" in manifest else "no (unsigned)"


def inspect_bank(path: Path, keys: tuple[Path, ...] = (), initramfs: Path | None = None) -> dict[str, Any]:
    """The manifest, its signer, whether the squashfs and hash tree match it, and the verdict."""
    with read_bank(path) as bank:
        manifest = bank.manifest
        files_ok = all(bank.verify(m) for m in bank.payload())
    text, ok = verdict(path, manifest, keys, initramfs, files_ok)
    return {"kind": "bank", "manifest": manifest, "signed": _signed(manifest), "files_ok": files_ok,
            "verdict": text, "ok": ok}


def _image_files_ok(part: Path, image: str, manifest: Manifest, tmp: Path) -> bool:
    """The image's squashfs (and hash tree) on the banks partition match its manifest: size and sha256."""
    from builder import faultdisk

    wanted = [(SQUASHFS, manifest["size"], manifest["sha256"])]
    if "verity" in manifest:
        wanted.append((VERITY, manifest["verity"]["size"], manifest["verity"]["sha256"]))
    for name, size, digest in wanted:
        out = tmp / f"{image}.{name}"
        faultdisk.debugfs(part, f"dump overlay/{image}/{name} {out}")
        if not out.exists() or hash_file(str(out)) != (size, digest):
            return False
        out.unlink()
    return True


def inspect_disk(path: Path, keys: tuple[Path, ...] = (), initramfs: Path | None = None) -> dict[str, Any]:
    """Every image on the disk's banks partition: pointers, state, manifest, signer, whether its files match
    and whether the disk's own initramfs (or `initramfs`, or `keys`) would boot it."""
    from builder import faultdisk
    from builder.disk import DiskError, read_boot_file

    with tempfile.TemporaryDirectory(prefix="bankboot-") as name:
        tmp = Path(name)
        try:
            from builder.firmware import committed_loader, firmware_of

            kind = firmware_of(path)
            if kind == "direct":
                own = read_boot_file(path, "initramfs.img", tmp)
                cmdline = read_boot_file(path, "cmdline.txt", tmp).read_text().strip()
            else:  # the committed loader slot's (docs/firmware.md)
                own, cmdline = committed_loader(path, kind, tmp)
        except (DiskError, IndexError) as e:
            raise ImageError(f"{path} is not a bankboot disk (no boot partition with initramfs.img and "
                             f"cmdline.txt): {e}") from None
        check_with = initramfs if initramfs is not None else (None if keys else own)
        images: list[dict[str, Any]] = []
        with faultdisk.banks_partition(path, write=False) as part:
            pointers = {p: faultdisk.pointer_or_none(part, p) for p in POINTERS}
            state = faultdisk.state_of(part)
            listing = faultdisk.debugfs(part, "ls -p overlay")
            # debugfs `ls -p`: /inode/mode/uid/gid/name/size/ per entry; the image directories
            rows = [f.split("/") for f in listing.splitlines() if f.startswith("/") and f.count("/") >= 6]
            ids = sorted(r[5] for r in rows if r[2].startswith("040") and not r[5].startswith("."))
            for image in ids:
                entry: dict[str, Any] = {"id": image, "pointers": [p for p in POINTERS if pointers[p] == image],
                                         "state": state.get("images", {}).get(image, {}).get("state")}
                raw = faultdisk.read_file(part, f"overlay/{image}/{MANIFEST}")
                try:
                    manifest = parse_manifest(raw, f"{path}:overlay/{image}/{MANIFEST}")
                except LayoutError as e:
                    entry.update(verdict=f"NO: {e}", ok=False)
                    images.append(entry)
                    continue
                files_ok = _image_files_ok(part, image, manifest, tmp)
                text, ok = verdict(path, manifest, keys, check_with, files_ok,
                                   "its initramfs" if check_with is own else None)
                entry.update(manifest=manifest, signed=_signed(manifest), files_ok=files_ok, verdict=text, ok=ok)
                images.append(entry)
    current = next((i for i in images if "current" in i["pointers"]), None)
    return {"kind": "disk", "cmdline": cmdline, "pointers": pointers, "images": images,
            "floor": state.get("floor"), "boot_floor": state.get("boot_floor"),
            "checked_against": str(initramfs) if initramfs else ("--trust keys" if keys else "its own initramfs"),
            "ok": bool(current and current.get("ok"))}


def inspect_file(path: Path, keys: tuple[Path, ...] = (), initramfs: Path | None = None) -> dict[str, Any]:
    if not path.is_file():
        raise ImageError(f"{path} does not exist or is not a file")
    return (inspect_disk if is_disk(path) else inspect_bank)(path, keys, initramfs)


def _human(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def describe(path: Path, report: dict[str, Any]) -> list[str]:
    """The report as lines for a person."""
    if report["kind"] == "bank":
        return [f"{path}: bank file", *_describe_image(report["manifest"], report)]
    lines = [f"{path}: bankboot disk; cmdline.txt: {report['cmdline']}",
             "  pointers: " + ", ".join(f"{p} -> {report['pointers'][p] or '(none)'}" for p in POINTERS),
             f"  anti-rollback floors: stage {report['floor'] or '(none)'}, boot {report['boot_floor'] or '(none)'}",
             f"  checked against {report['checked_against']}"]
    for entry in report["images"]:
        marks = f" [{', '.join(entry['pointers'])}]" if entry["pointers"] else ""
        lines.append(f"  image {entry['id']}{marks}, state {entry['state'] or '(not recorded)'}")
        if "manifest" in entry:
            lines += ["  " + x for x in _describe_image(entry["manifest"], entry)]
        else:
            lines.append(f"    verifies: {entry['verdict']}")
    lines.append(f"  current verifies: {'yes' if report['ok'] else 'NO'}")
    return lines


def _describe_image(m: Manifest, report: dict[str, Any]) -> list[str]:
    lines = [f"  image {m['id']}, version {m['version']}, {m['arch']}",
             f"  squashfs {_human(m['size'])} sha256 {m['sha256']}"]
    if "verity" in m:
        lines.append(f"  dm-verity root hash {m['verity']['root_hash']} (hash tree {_human(m['verity']['size'])})")
    if "kernel" in m:
        lines.append(f"  own kernel {m['kernel']['release']} (booted by kexec)")
    lines += [f"  needs bankboot {m.get('min_bankboot', 'any')}; confirm_boots: {m.get('confirm_boots', False)}",
              f"  {'sealed, persistent: ' + describe_persist(m['persist']) if 'persist' in m else 'UNSEALED'}",
              f"  signed: {report['signed']}; files match the manifest: {report['files_ok']}",
              f"  verifies: {report['verdict']}"]
    return lines


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, sort_keys=True)
