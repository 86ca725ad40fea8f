"""`bankboot inspect FILE`: what a bank file or a disk image holds and whether it verifies, like
`rauc info`. A bank file is checked against `--trust` keys or what an initramfs would accept at boot; a
disk image (as `bankboot disk` writes it, or as read off a device's card) is checked image by image against
the initramfs on its own boot partition, read offline without mounting anything."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from builder.image import ImageError, read_bank
from initfs import VERSION
from overlay_layout.hashing import hash_file
from overlay_layout.layout import MANIFEST, POINTERS, SQUASHFS, VERITY, LayoutError
from overlay_layout.manifest import describe_persist, parse_manifest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from overlay_layout.records import Manifest
    from overlay_layout.trust import KeySet, Policy

def is_disk(path: Path) -> bool:
    """A partitioned disk image (an MBR boot signature), not a bank file (a ustar archive)."""
    with open(path, "rb") as f:
        head = f.read(512)
    return len(head) == 512 and head[510:512] == b"\x55\xaa" and head[257:262] != b"ustar"


def check_policy(keys: tuple[Path, ...], initramfs: Path | None) -> Policy | None:
    """What an image is checked against: an initramfs's settings and root keys, else `keys` (any one)."""
    from overlay_layout.trust import Policy, TrustError, key_id, read_public_key

    try:
        if initramfs is not None:
            from builder.initramfs import read_settings

            conf, trusted = read_settings(initramfs)
            return Policy.of(conf, trusted)
        if keys:
            return Policy({key_id(k): k for k in (read_public_key(str(p)) for p in keys)}, False, False)
    except (ValueError, TrustError) as e:
        raise ImageError(str(e)) from None
    return None


def verdict(where: Path, manifest: Manifest, keys: tuple[Path, ...], initramfs: Path | None,
            files_ok: bool | None, initramfs_name: str | None = None, in_force: KeySet | None = None
            ) -> tuple[str, bool]:
    """Would the device boot this image: against what `initramfs` accepts (with `in_force`, the keys a disk's
    trust file puts in force), else against `keys`."""
    from overlay_layout.trust import TrustError

    if initramfs is not None:
        from builder.disk import DiskError, check_bootable

        try:
            check_bootable(where, manifest, initramfs, in_force)
            text, ok = f"yes: {initramfs_name or initramfs} would boot it", files_ok is not False
        except DiskError as e:
            text, ok = f"NO: {e}", False
    elif keys:
        policy = check_policy(keys, None)
        assert policy is not None
        try:
            who = policy.check(manifest, VERSION)
            text, ok = f"yes: signed by {who}", files_ok is not False
        except TrustError as e:
            text, ok = f"NO: {e}", False
    else:
        text, ok = "not checked (give --trust KEY.pub or --initramfs IMG)", files_ok is not False
    if files_ok is False:
        text += "; the squashfs or hash tree does NOT match its manifest"
    elif files_ok is None:
        text += "; its files are encrypted and were not checked (give --device-key KEY)"
    return text, ok


def _signed(manifest: Manifest) -> str:
    from overlay_layout.trust import signatures_of

    signers = [str(k) for k, _ in signatures_of(manifest)]
    return f"key{'s' if len(signers) > 1 else ''} {', '.join(signers)}" if signers else "no (unsigned)"


def signature_report(manifest: Manifest, policy: Policy | None, keys: KeySet | None = None) -> list[dict[str, Any]]:
    """Each signature with whether it verifies against the keys checked with (None: not checked, or by a key
    they do not hold)."""
    from overlay_layout.trust import signatures_of, signed_bytes

    keyset = keys or (policy.root if policy else None)
    out = []
    for kid, sig in signatures_of(manifest):
        valid = None
        if keyset is not None and kid in keyset.keys:
            good, _ = keyset.count(signed_bytes(manifest), [(kid, sig)], need=1)
            valid = bool(good)
        retired = keyset.retired.get(str(kid)) if keyset is not None else None
        out.append({"key": kid, "valid": valid, **({"retired_by_key_update": retired} if retired else {})})
    return out


def key_update_report(manifest: Manifest, policy: Policy | None) -> tuple[list[dict[str, Any]], str | None]:
    """The key updates a bank carries, and where they lead from the checked root keys (or why they do not)."""
    from overlay_layout.keychain import extend
    from overlay_layout.trust import TrustError

    chain = manifest.get("key_updates") or []
    rows = [{"serial": u["serial"], "keys": sorted(u["keys"]), "threshold": u["threshold"],
             "signed_by": [s["key"] for s in u["signatures"]]} for u in chain]
    if not chain or policy is None:
        return rows, None
    try:
        leads = extend(policy.root, chain, "").describe()
        return rows, f"from the root keys checked against, they put in force {leads}"
    except TrustError as e:
        return rows, f"they do NOT verify from the root keys checked against: {str(e).lstrip(': ')}"


def _encrypted_files_ok(bank: Any, device_key: Path) -> bool:
    from builder.signing import SigningError, check_encrypted

    try:
        check_encrypted(bank, device_key)
        return True
    except SigningError:
        return False


def inspect_bank(path: Path, keys: tuple[Path, ...] = (), initramfs: Path | None = None,
                 device_key: Path | None = None) -> dict[str, Any]:
    """The manifest, its signers, whether the squashfs and hash tree match it (an encrypted bank's only with a
    recipient's `device_key`), and the verdict."""
    with read_bank(path) as bank:
        manifest = bank.manifest
        if bank.encrypted:
            files_ok = _encrypted_files_ok(bank, device_key) if device_key is not None else None
        else:
            files_ok = all(bank.verify(m) for m in bank.payload())
    text, ok = verdict(path, manifest, keys, initramfs, files_ok)
    policy = check_policy(keys, initramfs)
    updates, leads = key_update_report(manifest, policy)
    report: dict[str, Any] = {"kind": "bank", "manifest": manifest, "signed": _signed(manifest), "files_ok": files_ok,
              "signatures": signature_report(manifest, policy), "verdict": text, "ok": ok}
    if updates:
        report.update(key_updates=updates, key_updates_lead=leads)
    if "encryption" in manifest:
        report["encrypted_for"] = [r["key"] for r in manifest["encryption"]["recipients"]]
    return report


def _image_files_ok(part: Path, image: str, manifest: Manifest, tmp: Path) -> bool:
    """The image's squashfs (and hash tree) on the banks partition match its manifest: size and sha256."""
    from builder import bankspart

    wanted = [(SQUASHFS, manifest["size"], manifest["sha256"])]
    if "verity" in manifest:
        wanted.append((VERITY, manifest["verity"]["size"], manifest["verity"]["sha256"]))
    for name, size, digest in wanted:
        out = tmp / f"{image}.{name}"
        bankspart.debugfs(part, f"dump overlay/{image}/{name} {out}")
        if not out.exists() or hash_file(str(out)) != (size, digest):
            return False
        out.unlink()
    return True


def inspect_disk(path: Path, keys: tuple[Path, ...] = (), initramfs: Path | None = None) -> dict[str, Any]:
    """Every image on the disk's banks partition: pointers, state, manifest, signer, whether its files match
    and whether the disk's own initramfs (or `initramfs`, or `keys`) would boot it."""
    from builder import bankspart
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
        with bankspart.banks_partition(path, write=False) as part:
            pointers = {p: bankspart.pointer_or_none(part, p) for p in POINTERS}
            state = bankspart.state_of(part)
            in_force = disk_keys(part, pointers, check_with, tmp)
            listing = bankspart.debugfs(part, "ls -p overlay")
            # debugfs `ls -p`: /inode/mode/uid/gid/name/size/ per entry; the image directories
            rows = [f.split("/") for f in listing.splitlines() if f.startswith("/") and f.count("/") >= 6]
            ids = sorted(r[5] for r in rows if r[2].startswith("040") and not r[5].startswith("."))
            for image in ids:
                entry: dict[str, Any] = {"id": image, "pointers": [p for p in POINTERS if pointers[p] == image],
                                         "state": state.get("images", {}).get(image, {}).get("state")}
                raw = bankspart.read_file(part, f"overlay/{image}/{MANIFEST}")
                try:
                    manifest = parse_manifest(raw, f"{path}:overlay/{image}/{MANIFEST}")
                except LayoutError as e:
                    entry.update(verdict=f"NO: {e}", ok=False)
                    images.append(entry)
                    continue
                files_ok = _image_files_ok(part, image, manifest, tmp)
                text, ok = verdict(path, manifest, keys, check_with, files_ok,
                                   "its initramfs" if check_with is own else None, in_force)
                entry.update(manifest=manifest, signed=_signed(manifest), files_ok=files_ok, verdict=text, ok=ok,
                             signatures=signature_report(manifest, None, in_force))
                images.append(entry)
    current = next((i for i in images if "current" in i["pointers"]), None)
    trust = {"keys": sorted(in_force.keys), "threshold": in_force.threshold, "serial": in_force.serial,
             "retired": in_force.retired} if in_force is not None else None
    return {"kind": "disk", "cmdline": cmdline, "pointers": pointers, "images": images, "trust": trust,
            "floor": state.get("floor"), "boot_floor": state.get("boot_floor"),
            "checked_against": str(initramfs) if initramfs else ("--trust keys" if keys else "its own initramfs"),
            "ok": bool(current and current.get("ok"))}


def disk_keys(part: Path, pointers: dict[str, str | None], initramfs: Path | None, tmp: Path) -> KeySet | None:
    """The keys in force on a disk's banks partition (its trust file and committed images' key updates, from
    the initramfs's root keys), as its init would find them; None without an initramfs to start from."""
    from builder import bankspart
    from overlay_layout.keychain import TRUST_FILE, in_force

    policy = check_policy((), initramfs) if initramfs is not None else None
    if policy is None:
        return None
    banks = tmp / "banks-view"
    banks.mkdir(exist_ok=True)
    raw = bankspart.read_file(part, TRUST_FILE)
    if raw:
        (banks / TRUST_FILE).write_bytes(raw)
    manifests = []
    for name in ("current", "previous"):
        if pointers.get(name):
            try:
                manifests.append(json.loads(bankspart.read_file(part, f"overlay/{pointers[name]}/{MANIFEST}")))
            except ValueError:
                pass
    return in_force(policy.root, str(banks), manifests)[0]


def inspect_file(path: Path, keys: tuple[Path, ...] = (), initramfs: Path | None = None,
                 device_key: Path | None = None) -> dict[str, Any]:
    if not path.is_file():
        raise ImageError(f"{path} does not exist or is not a file")
    if is_disk(path):
        return inspect_disk(path, keys, initramfs)
    return inspect_bank(path, keys, initramfs, device_key)


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
    t = report.get("trust")
    if t is not None:
        origin = f"key update {t['serial']}" if t["serial"] else "the initramfs's own"
        lines.append(f"  keys in force: {', '.join(t['keys'])} (threshold {t['threshold']}; {origin})")
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
    files = "encrypted, not checked" if report["files_ok"] is None else report["files_ok"]
    lines += [f"  needs bankboot {m.get('min_bankboot', 'any')}; confirm_boots: {m.get('confirm_boots', False)}",
              f"  {'sealed, persistent: ' + describe_persist(m['persist']) if 'persist' in m else 'UNSEALED'}",
              f"  signed: {report['signed']}; files match the manifest: {files}"]
    for sig in report.get("signatures", []):
        state = {True: "verifies", False: "DOES NOT verify", None: "by a key not checked against"}[sig["valid"]]
        retired = f" (retired by key update {sig['retired_by_key_update']})" if "retired_by_key_update" in sig else ""
        lines.append(f"    signature by key {sig['key']}: {state}{retired}")
    for u in report.get("key_updates", []):
        lines.append(f"  key update {u['serial']}: keys {', '.join(u['keys'])}, threshold {u['threshold']}, "
                     f"signed by {', '.join(u['signed_by'])}")
    if report.get("key_updates_lead"):
        lines.append(f"    {report['key_updates_lead']}")
    if "encrypted_for" in report:
        lines.append(f"  encrypted for key{'s' if len(report['encrypted_for']) > 1 else ''} "
                     f"{', '.join(report['encrypted_for'])}")
    lines.append(f"  verifies: {report['verdict']}")
    return lines


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1, sort_keys=True)
