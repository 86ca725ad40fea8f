"""The shapes of bankboot's records, for the type checker: the manifest, the state file, the boot log and
the boot policy's records. The runtime modules import this only under TYPE_CHECKING (typing costs the init
a quarter of a second under TCG): at run time the manifest, state and boot records stay plain dicts read
from JSON and checked field by field where they are read (manifest.parse_manifest, state.check_state,
bootlog.read_log), and the policy's records are collections.namedtuple classes that
tests/unit/test_records.py holds to the NamedTuples below."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict

if TYPE_CHECKING:
    from overlay_layout.policy import Plan

State = Literal["good", "trial", "bad"]


# --- manifest.json (overlay_layout/manifest.py) ---
class Verity(TypedDict):
    root_hash: str
    salt: str
    hash_algorithm: str
    data_block_size: int
    hash_block_size: int
    size: int
    sha256: str


class KernelFile(TypedDict):
    path: str
    size: int
    sha256: str


class _KernelRequired(TypedDict):
    release: str  # uname -r
    version: str  # uname -v
    image: KernelFile


class KernelInfo(_KernelRequired, total=False):
    initramfs: KernelFile
    tls: KernelFile  # the initramfs's TLS piece
    append: str


class ChunkIndex(TypedDict):
    size: int  # of rootfs.chunks
    sha256: str
    count: int


class _ManifestRequired(TypedDict):
    format: int
    id: str
    version: str
    arch: str  # Debian architecture
    size: int  # of the squashfs
    sha256: str  # of the squashfs
    created: str


class PreflightInfo(TypedDict):
    init: str  # the init these ranges are for (the image's /sbin/init)
    ranges: list[list[int]]  # [offset, length] in the squashfs, whole verity blocks, sorted and apart


class Signature(TypedDict):
    key: str  # key id
    signature: str  # ed25519, hex


class KeyUpdate(TypedDict):
    """overlay_layout/keychain.py"""

    serial: int
    threshold: int
    keys: dict[str, str]  # key id -> base64 public key
    signatures: list[Signature]


class Recipient(TypedDict):
    key: str  # id of the recipient's X25519 key
    sealed: str  # the content key, a libsodium sealed box to that key, hex


class Encryption(TypedDict):
    """overlay_layout/encryption.py"""

    cipher: str
    recipients: list[Recipient]


class Manifest(_ManifestRequired, total=False):
    verity: Verity
    chunks: ChunkIndex  # the squashfs's chunk index (overlay_layout/chunks.py)
    persist: list[str]  # sealed: the only paths that keep changes
    kernel: KernelInfo
    confirm_boots: bool
    min_bankboot: str
    signatures: list[Signature]
    key: str  # id of the signing key (the single-signature form of older builds)
    signature: str  # (older builds)
    key_updates: list[KeyUpdate]  # the chain of key updates from the root keys (keychain.py)
    encryption: Encryption  # the bank's squashfs, hash tree and chunk index are encrypted
    preflight: PreflightInfo  # the byte ranges of the squashfs holding the init and its libraries
    _signed_by: str  # set by the reader that checked the signature, never stored
    _device: str  # set by the init: the block device the image's squashfs is mounted from, never stored
    _fetched: str  # set by an encrypted stage: where its bytes came from, never stored
    _keys: str  # set by stage: the key update that commits with it (keychain.changes), never stored


# --- state.json (overlay_layout/state.py) ---
class ImageEntry(TypedDict, total=False):
    state: State
    tries: int  # a trial's tries left
    reason: str  # why it is bad
    staged: int  # when (epoch seconds)
    committed: int  # when it was marked good
    unconfirmed: int  # boots since the last boot-ok


class ResetRequest(TypedDict):
    keep_backup: bool
    requested: int


class _StateRequired(TypedDict):
    format: int
    images: dict[str, ImageEntry]
    reset: dict[str, ResetRequest]


class StateFile(_StateRequired, total=False):
    floor: str  # anti-rollback: no image below this version may be staged
    boot_floor: str  # ... or booted


# --- boot-log.json (overlay_layout/bootlog.py) and /run/bankboot/booted ---
class Tried(TypedDict):
    image: str
    why: str
    error: str


class FallbackFrom(TypedDict):
    image: str
    reason: str


class BootRecord(TypedDict, total=False):
    time: int
    kernel: str
    image: str | None
    why: str
    trial: bool
    selftest: str
    outcome: str
    sealed: bool | None
    build: str
    fallback_from: FallbackFrom
    tried: list[Tried]
    notes: str
    unconfirmed_boots: int | None
    previous_boot: str


class Prepared(TypedDict, total=False):
    """What preparing a candidate found (initfs/bootflow.prepare)."""

    signed_by: str
    kexec: str  # the kernel release to kexec into
    confirm_boots: bool
    sealed: bool
    persist: list[str] | None
    selftest: str
    notes: list[str]  # what was repaired on the banks partition (a planted symlink replaced)


# --- `bankctl status --json` (overlay_layout/statusview.py), read by bankctl and the console menu ---
class StatusImage(TypedDict):
    id: str
    version: str | None
    state: str  # good, trial, bad or unknown
    kernel: str | None  # the release of the image's own kernel
    tries: int | None  # a trial's tries left
    reason: str | None  # why it is bad
    pointers: list[str]  # the pointers naming it
    reset_pending: bool
    confirm_boots: bool
    unconfirmed_boots: int
    sealed: bool
    persist: list[str] | None
    persist_mounts: dict[str, str] | None  # persistent path -> its mount options
    below_floor: bool
    untrusted: str | None  # why the keys in force can never verify it


class MenuEntry(StatusImage, total=False):
    last_boot: str | None  # the outcome of its last boot (initfs/bootflow.menu_selection)


class PlanEntry(TypedDict):
    image: str
    why: str
    trial: bool


class Status(TypedDict):
    pointers: dict[str, str | None]
    images: list[StatusImage]
    floor: str | None
    boot_floor: str | None
    plan: list[PlanEntry]
    warnings: list[str]


# --- /run/bankboot/booted (initfs/bootflow.boot_image), read by bankctl and the image ---
class BootedKernel(TypedDict):
    running: str  # uname -r
    loader: str  # the release of the kernel that chose the image (the running one unless kexec'd)


class Booted(TypedDict, total=False):  # the init writes every field; a reader of a missing file gets {}
    image: str
    why: str
    trial: bool
    signed_by: str | None
    confirm_boots: bool | None
    unconfirmed_boots: int | None
    sealed: bool | None
    persist: list[str] | None
    kernel: BootedKernel
    build: str
    tried: list[Tried]
    warnings: list[str]


# --- the boot policy's records (overlay_layout/policy.py) ---
class ImageInfo(NamedTuple):
    """id; state (None when unknown); tries; reason (of bad); version; committed: when it was marked good (0:
    never, or not known); confirm: its signed manifest asks for `bankctl boot-ok` after each boot;
    unconfirmed: boots since the last boot-ok; persist: its persistence policy (a tuple: sealed) or None."""

    id: str
    state: State | None = None
    tries: int = 0
    reason: str | None = None
    version: str | None = None
    committed: int = 0
    confirm: bool = False
    unconfirmed: int = 0
    persist: tuple[str, ...] | None = None


class Snapshot(NamedTuple):
    """The pointers (image ids or None), images by id, damaged: pointers that exist but could not be
    followed, boot_floor: no image below this version boots (anti-rollback), untrusted: (image, why) for
    images the keys in force can never verify (signed only by retired or unknown keys): none of them boots."""

    current: str | None
    next: str | None
    previous: str | None
    images: dict[str, ImageInfo]
    damaged: tuple[str, ...] = ()
    boot_floor: str | None = None
    untrusted: tuple[tuple[str, str], ...] = ()


Role = Literal["selected", "trial", "pinned", "current", "previous", "good", "last_resort"]


class Candidate(NamedTuple):
    """An image one boot may try, why (a sentence for people), whether it is a trial, and its role in the
    order (policy.SELECTED ... policy.LAST_RESORT: what code decides on)."""

    image: str
    why: str
    trial: bool = False
    role: Role = "current"


EffectKind = Literal["spend_try", "mark_bad", "clear_next", "roll_forward", "demote", "repoint_current",
                     "drop_pointer"]


class Effect(NamedTuple):
    """A state change the plan makes before anything is mounted, in this order."""

    kind: EffectKind
    image: str | None = None
    reason: str = ""
    pointer: str | None = None  # drop_pointer's pointer (layout.POINTERS)


class Chosen(NamedTuple):
    """What a boot's candidate walk ended with (overlay_layout.state.walk)."""

    candidate: Candidate | None  # the one that prepared; None when none did
    why: str  # as the boot record says it (a selection names who made it)
    prepared: Prepared
    tried: list[Tried]  # the candidates that failed before it, in order
    plan: Plan


class Option(NamedTuple):
    """A kernel command-line option the init reads (initfs/options.py's table)."""

    key: str
    kind: str  # seconds, int, str, flag or choice
    default: Any
    low: float = 0.0
    high: float = math.inf
    choices: tuple[str, ...] = ()
    help: str = ""
