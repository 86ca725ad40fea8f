"""What `bankctl poll` tells a fleet's servers about the device, in request headers a web server or a CDN
logs (nginx: $http_bankboot_device ...):

    Bankboot-Device    the device's id (below)
    Bankboot-Board     its board (the initramfs's board=)
    Bankboot-Image     the running image's id, and
    Bankboot-Version   its version
    Bankboot-State     committed, or fell-back: this boot fell back from an image that failed, or the
                       release the channel offers failed here before
    Bankboot-Fallback  then: "<image> <version>: <why>", from the boot log and the state

The device id is derived from /etc/machine-id as systemd's application-specific ids are (HMAC-SHA256 keyed
with the machine id over APP_ID, as a v4 UUID: `systemd-id128 machine-id --app-specific=APP_ID` prints the
same), so the machine id itself, which systemd asks to keep confidential, never leaves the device. Without
one, the board's serial number (device tree, DMI) as `serial-<number>`; without that, no id is sent."""

from __future__ import annotations

import os

from overlay_layout.hashing import sha256

APP_ID = bytes.fromhex("c06d8e841e874ab9bf09b8c168c1a0b9")  # bankboot's, for app-specific machine ids
MACHINE_ID = "/etc/machine-id"
SERIALS = ("/sys/firmware/devicetree/base/serial-number", "/proc/device-tree/serial-number",
           "/sys/class/dmi/id/product_serial")
MAX_VALUE = 200
_HEX = frozenset("0123456789abcdef")


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """RFC 2104 over overlay_layout.hashing's SHA-256 (the frozen bankctl has no hmac module with OpenSSL)."""
    if len(key) > 64:
        key = sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner = sha256(bytes(b ^ 0x36 for b in key) + message).digest()
    return bytes(sha256(bytes(b ^ 0x5C for b in key) + inner).digest())


def app_specific_id(machine_id: bytes, app_id: bytes = APP_ID) -> str:
    """systemd's sd_id128_get_machine_app_specific(): 32 hex digits."""
    digest = bytearray(hmac_sha256(machine_id, app_id)[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40
    digest[8] = (digest[8] & 0x3F) | 0x80
    return digest.hex()


def _read(path: str, limit: int = 256) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("ascii", "replace").strip("\0\n\t ")
    except OSError:
        return ""


def device_id(root: str = "/") -> str | None:
    """The id this device is known by (see the module's docstring), or None."""
    machine = _read(os.path.join(root, MACHINE_ID.lstrip("/"))).lower()
    if len(machine) == 32 and set(machine) <= _HEX and machine != "0" * 32:
        return app_specific_id(bytes.fromhex(machine))
    for path in SERIALS:
        serial = clean(_read(os.path.join(root, path.lstrip("/"))))
        if serial and serial.strip("0"):
            return f"serial-{serial}"
    return None


def clean(value: object) -> str:
    """A header value: printable ASCII on one line, at most MAX_VALUE characters."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(value))
    return " ".join(text.split())[:MAX_VALUE]


def headers(device: str | None, board: str, image: str | None, version: str | None,
            fallback: str | None) -> list[tuple[str, str]]:
    """The request headers of the module's docstring; `fallback`: "<image> <version>: <why>" or None."""
    out = [("Bankboot-Device", device), ("Bankboot-Board", board), ("Bankboot-Image", image),
           ("Bankboot-Version", version), ("Bankboot-State", "fell-back" if fallback else "committed"),
           ("Bankboot-Fallback", fallback)]
    return [(k, clean(v)) for k, v in out if v]
