"""Two-stage boot: the kernel and initramfs on the boot partition are the loader; an image that carries its
own kernel (manifest `kernel`, files inside its verified squashfs) is booted by kexec'ing that kernel with
the image's bankboot initramfs and `bankboot.kexec=<image>` on its command line.

The second stage boots exactly that image without spending another try, and never kexecs again: a
failure there reboots to the loader, whose policy then counts the trial as it would any other. Same
kernel (release and build equal to the running one): no kexec at all."""

from __future__ import annotations

import os

from initfs import log
from overlay_layout.errors import BankbootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from overlay_layout.records import KernelFile, Manifest

PIN = "bankboot.kexec"
LOADER = "bankboot.loader"  # <release>@<crc32 of uname -v> of the loader's kernel


class KexecError(BankbootError):
    pass


def needs_kexec(manifest: Manifest) -> bool:
    """The image names a kernel other than the running one (release or build differ)."""
    k = manifest.get("kernel")
    if not k:
        return False
    u = os.uname()
    return (k["release"], k["version"]) != (u.release, u.version)


def second_stage_command_line(image: str, append: str, proc_cmdline: str | None = None) -> str:
    """The loader's command line, with the image's extra parameters and the pin for this one boot."""
    if proc_cmdline is None:
        with open("/proc/cmdline") as f:
            proc_cmdline = f.read()
    base = [w for w in proc_cmdline.split() if not w.startswith((f"{PIN}=", f"{LOADER}="))]
    return " ".join([*base, *append.split(), f"{LOADER}={kernel_token()}", f"{PIN}={image}"])


def kernel_token() -> str:
    """The running kernel as `<release>@<crc32 of its uname -v>`: the second stage compares it with the
    loader's to know that a kexec really happened."""
    import zlib

    u = os.uname()
    return f"{u.release}@{zlib.crc32(u.version.encode()):08x}"


def check_pin(pin: str | None, loader: str | None) -> str | None:
    """The pin to honour: only when this kernel is not the loader's (a kexec happened). A bankboot.kexec= that
    reached the loader itself (typed into cmdline.txt) is dropped with a warning: honouring it there would
    stop every kexec and could loop."""
    if not pin:
        return None
    if not loader or loader == kernel_token():
        log.error(f"{PIN}={pin} ignored: this kernel was not started by bankboot's loader")
        return None
    return pin


def check_file(path: str, want: KernelFile, verified: bool) -> None:
    """The file is what the signed manifest says: its size always; its sha256 too unless the squashfs is
    read through dm-verity (then every byte read is checked already)."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise KexecError(f"cannot read {path}: {e.strerror}") from e
    if size != want["size"]:
        raise KexecError(f"{path} is {size} bytes; the signed manifest says {want['size']}")
    if not verified:
        from overlay_layout.hashing import hash_file

        try:
            digest = hash_file(path)[1]
        except OSError as e:
            raise KexecError(f"cannot read {path}: {e}") from e
        if digest != want["sha256"]:
            raise KexecError(f"{path} does not match the sha256 in the signed manifest")


KEXEC_TOOL = "/sbin/kexec"


def cpus_held(root: str = "") -> str | None:
    """Why the running kernel cannot kexec on this machine's CPUs, None when it can: firmware that started the
    other cores through a spin table (the Raspberry Pis' armstub) gives Linux no way to stop them, and it
    refuses any kexec while more than one CPU is possible ("Can't kexec: CPUs are stuck in the kernel")."""
    base = f"{root}/proc/device-tree/cpus"
    try:
        names = [n for n in os.listdir(base) if n.startswith("cpu@")]
    except OSError:
        return None  # no device tree (x86_64, ACPI): PSCI or the BIOS's own way
    spin = []
    for name in names:
        try:
            with open(f"{base}/{name}/enable-method", "rb") as f:
                if f.read().rstrip(b"\0") == b"spin-table":
                    spin.append(name)
        except OSError:
            continue
    try:
        with open(f"{root}/sys/devices/system/cpu/possible") as f:
            possible = f.read().strip()
    except OSError:
        possible = "0"
    if not spin or possible == "0":
        return None
    return (f"this machine's firmware starts its CPUs through a spin table ({', '.join(sorted(spin))}), from which "
            f"Linux cannot take them back, and CPUs {possible} are possible: the kernel refuses to kexec here "
            f"(a board like the Raspberry Pis boots images on the loader's kernel: docs/boards.md)")


def load(kernel: str, initramfs: str, cmdline: str, method: str = "file") -> None:
    """Stage the kernel; nothing runs until execute(). `file`: kexec_file_load (the kernel checks the image:
    architecture, format, a signature where it enforces one); `tools`: Debian's kexec-tools through
    kexec_load, for kernels without kexec_file_load (its checks, and the running device tree)."""
    if method == "none":
        raise KexecError("this initramfs does not kexec (initramfs.conf kexec=none: its board cannot, or its "
                         "kernel was built without kexec), so an image carrying another kernel cannot boot here")
    held = cpus_held()
    if held is not None:
        raise KexecError(held)
    if method == "tools":
        # --no-checks: no sha256 of every segment in the purgatory, run with caches off (seconds on slow
        # boards); the segments are loaded and started within the same second, from checked files.
        code, out = _run([KEXEC_TOOL, "-l", "--no-checks", kernel, f"--initrd={initramfs}",
                          f"--command-line={cmdline}"])
        if code != 0:
            raise KexecError(f"kexec -l {kernel} (kexec-tools) failed with status {code}: "
                             f"{' '.join(out.split())[-400:] or 'no message'}")
        return
    if method != "file":
        raise KexecError(f"initramfs.conf kexec={method}: not a way this init knows to kexec")
    from initfs.syscalls import kexec_file_load

    kfd = _raw_kernel(kernel)
    try:
        ifd = os.open(initramfs, os.O_RDONLY | os.O_CLOEXEC)
        try:
            kexec_file_load(kfd, ifd, cmdline)
        finally:
            os.close(ifd)
    except OSError as e:
        hint = {8: " (not a kernel this machine can run: wrong architecture or damaged)",
                1: " (the running kernel refuses kexec: lockdown or kexec_load_disabled)",
                38: " (the running kernel was built without kexec_file_load)"}.get(e.errno or 0, "")
        raise KexecError(f"kexec_file_load of {kernel}: {e.strerror}{hint}") from e
    finally:
        os.close(kfd)


def _raw_kernel(kernel: str) -> int:
    """A descriptor on the kernel as kexec_file_load takes it: a gzip-compressed one (Debian's arm64
    vmlinuz) inflated into memory first."""
    fd = os.open(kernel, os.O_RDONLY | os.O_CLOEXEC)
    if os.pread(fd, 2, 0) != b"\x1f\x8b":
        return fd
    import zlib

    out = os.memfd_create("bankboot-kernel", os.MFD_CLOEXEC)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        while chunk := os.read(fd, 4 << 20):
            os.write(out, d.decompress(chunk))
        os.write(out, d.flush())
    except zlib.error as e:
        os.close(out)
        raise KexecError(f"{kernel}: damaged gzip data ({e})") from e
    finally:
        os.close(fd)
    return out


def _run(argv: list[str]) -> tuple[int, str]:
    """Run a program with the kernel's environment (not the bundle's); (exit code, its output)."""
    from initfs.switchroot import clean_environ

    r, w = os.pipe()
    try:
        pid = os.posix_spawn(argv[0], argv, clean_environ(),
                             file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)])
    except OSError as e:
        os.close(r)
        raise KexecError(f"cannot run {argv[0]}: {e.strerror}") from e
    finally:
        os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def execute() -> NoReturn:
    """Start the loaded kernel; returns only on failure."""
    from initfs.syscalls import LINUX_REBOOT_CMD_KEXEC, reboot

    os.sync()
    try:
        reboot(LINUX_REBOOT_CMD_KEXEC)
    except OSError as e:
        raise KexecError(str(e)) from e
    raise KexecError("reboot(LINUX_REBOOT_CMD_KEXEC) returned")


def prepare_kexec(lower: str, image: str, manifest: Manifest, method: str = "file") -> str:
    """Check and stage the image's kernel and initramfs (read from its mounted squashfs `lower`). Returns a
    line for the console."""
    k = manifest["kernel"]
    if "initramfs" not in k:
        raise KexecError(f"image {image} carries kernel {k['release']} but no initramfs for it")
    verified = "verity" in manifest
    paths = {}
    for name in ("image", "initramfs"):
        paths[name] = lower + k[name]["path"]
        check_file(paths[name], k[name], verified)
    cmdline = second_stage_command_line(image, k.get("append", ""))
    with log.step(f"kexec load ({method})"):
        load(paths["image"], paths["initramfs"], cmdline, method)
    return f"image {image} runs on its own kernel {k['release']} (this is {os.uname().release}): kexec"
