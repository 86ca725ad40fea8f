"""bankctl in the booted system. The frozen program (this one) is copied once per build from the
initramfs into the booted image's utils/ on the banks partition, with the libraries and ld.so it needs and
a static busybox, so it runs in any image, even one without a libc or with another one:

    /run/bankboot/kit          -> banks/overlay/<image>/utils/bankboot-<build>
    /run/bankboot/bin/busybox  -> ../kit/bin/busybox
    /run/bankboot/bin/bankctl     a busybox sh script that runs the kit's init through the kit's ld.so
"""

from __future__ import annotations

import os
import shutil

from initfs import log
from overlay_layout import durable
from overlay_layout.layout import Layout

KIT_LIST = "/etc/bankboot/kit"
RUN = "/run/bankboot"


def _copy(src: str, dst: str, sync: bool = True) -> None:
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        os.mkdir(dst)
        for name in sorted(os.listdir(src)):
            _copy(f"{src}/{name}", f"{dst}/{name}", sync)
    else:
        if sync:
            durable.checkpoint(f"copy {dst}")
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            if sync:
                os.fsync(fo.fileno())
        os.chmod(dst, os.stat(src).st_mode & 0o7777)


def install_kit(layout: Layout, image: str, config: dict[str, str], source: str = "/", run: str = RUN) -> str:
    """The kit in the image's utils/ (once per build). When the banks partition cannot take it (full,
    read-only, I/O error), a copy on /run (tmpfs) serves this boot, so bankctl still works: a trial can
    still commit itself, and `bankctl gc` can make room."""
    build = config.get("build", "unknown")
    utils = layout.sub(image, "utils")
    dest = f"{utils}/bankboot-{build}"
    if not os.path.isdir(dest):
        try:
            _install(source, utils, dest)
        except OSError as e:
            durable.remove_tree_quietly(f"{dest}.tmp")
            log.error(f"cannot install bankctl in {utils} ({e.strerror}); using a copy in memory for this boot")
            dest = f"{run}/volatile-kit/bankboot-{build}"
            _install(source, os.path.dirname(dest), dest, durable_copy=False)
        for old in os.listdir(utils) if dest.startswith(utils) else []:
            if old.startswith("bankboot-") and f"{utils}/{old}" != dest:
                durable.remove_tree_quietly(f"{utils}/{old}")
        log.log(f"installed bankctl for build {build} in {dest}")
    _link(dest, config, run)
    return dest


def _install(source: str, parent: str, dest: str, durable_copy: bool = True) -> None:
    """Copy the kit (the files KIT_LIST names, from the initramfs at `source`) to `dest`, via a temp
    directory renamed into place: a kit under its final name is always complete."""
    with open(os.path.join(source, KIT_LIST.lstrip("/"))) as f:
        paths = [line.strip() for line in f if line.strip()]
    if durable_copy:
        durable.make_dirs(parent)
    else:
        os.makedirs(parent, exist_ok=True)
    tmp = f"{dest}.tmp"
    durable.remove_tree(tmp)
    os.mkdir(tmp)
    for rel in paths:
        os.makedirs(os.path.dirname(f"{tmp}/{rel}"), exist_ok=True)
        _copy(os.path.join(source, rel), f"{tmp}/{rel}", durable_copy)
    if durable_copy:
        for dirpath, _, _ in os.walk(tmp):
            durable.fsync_dir(dirpath)
        durable.rename(tmp, dest)
    else:
        os.rename(tmp, dest)


def _link(dest: str, config: dict[str, str], run: str = RUN) -> None:
    os.makedirs(f"{run}/bin", exist_ok=True)
    for path, target in ((f"{run}/kit", dest), (f"{run}/bin/busybox", "../kit/bin/busybox")):
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
    interp = config.get("interp", "/lib/ld-linux-aarch64.so.1")
    libdirs = ":".join(f"$k{d}" for d in config.get("libdirs", "/lib").split(":"))
    # LD_LIBRARY_PATH, not ld.so --library-path: PyInstaller's bootloader re-execs itself and the
    # environment is what survives that.
    script = (f"#!{RUN}/bin/busybox sh\n# bankctl: bankboot's frozen program from the kit, through the kit's ld.so.\n"
              f"k={RUN}/kit\nexport BANKBOOT_ENTRY=bankctl BANKBOOT_KIT=$k LD_LIBRARY_PATH=\"{libdirs}\"\n"
              f'exec "$k{interp}" "$k/init" "$@"\n')
    with open(f"{run}/bin/bankctl", "w") as f:
        f.write(script)
    os.chmod(f"{run}/bin/bankctl", 0o755)
