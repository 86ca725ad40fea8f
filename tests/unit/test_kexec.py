"""Images with their own kernel: reading kernel files, the manifest's `kernel` object, the second stage's
command line and the policy's pin (the loader spent the try; the second stage must not spend another)."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import pytest

from builder.kernelfile import KernelFileError, read_kernel
from initfs.kexec import check_pin, kernel_token, needs_kexec, second_stage_command_line
from overlay_layout.layout import LayoutError
from overlay_layout.manifest import check_kernel
from overlay_layout.policy import BAD, GOOD, TRIAL, ImageInfo, Snapshot, plan_boot

KERNEL = {"release": "6.1.0-50-cloud-arm64", "version": "#1 SMP Debian 6.1.176-1 (2026-07-02)",
          "image": {"path": "/boot/bankboot/kernel", "size": 100, "sha256": "a" * 64},
          "initramfs": {"path": "/boot/bankboot/initramfs.img", "size": 10, "sha256": "b" * 64}}


def test_refuses_what_is_not_a_kernel(tmp_path: Path) -> None:
    for name, data in (("text", b"hello" * 100), ("badgzip", b"\x1f\x8b" + b"\0" * 50),
                       ("nobanner", gzip.compress(b"\0" * 0x38 + b"ARM\x64" + b"\0" * 100))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(KernelFileError, match=name):
            read_kernel(tmp_path / name)


def test_manifest_kernel_fields_are_checked() -> None:
    assert check_kernel(copy.deepcopy(KERNEL), "m") == KERNEL
    bad = [("release", "6.1 with spaces"), ("version", "a\nb"), ("append", "bankboot.kexec=x"),
           ("append", "x" * 2000), ("extra", 1)]
    for key, value in bad:
        with pytest.raises(LayoutError, match=f"kernel|{key}"):
            check_kernel({**copy.deepcopy(KERNEL), key: value}, "m")
    k = copy.deepcopy(KERNEL)
    k["image"]["path"] = "/upper/kernel"
    with pytest.raises(LayoutError, match="kernel.image"):
        check_kernel(k, "m")
    k = copy.deepcopy(KERNEL)
    k["initramfs"]["sha256"] = "Z" * 64
    with pytest.raises(LayoutError, match="initramfs.sha256"):
        check_kernel(k, "m")
    del k["initramfs"]
    del k["image"]
    with pytest.raises(LayoutError, match="kernel.image"):
        check_kernel(k, "m")


def test_needs_kexec_only_for_another_kernel(monkeypatch) -> None:
    import os

    class U:
        release, version = KERNEL["release"], KERNEL["version"]
    monkeypatch.setattr(os, "uname", lambda: U)
    assert not needs_kexec({"kernel": KERNEL}) and not needs_kexec({})
    assert needs_kexec({"kernel": {**KERNEL, "version": "#2 rebuilt"}})
    assert needs_kexec({"kernel": {**KERNEL, "release": "6.1.0-51-arm64"}})


def test_second_stage_command_line_pins_one_image() -> None:
    line = second_stage_command_line("1.1.0-abc", "quiet foo=1",
                                     "console=ttyAMA0 bankboot.kexec=old root=PARTUUID=x panic=-1\n")
    assert line == (f"console=ttyAMA0 root=PARTUUID=x panic=-1 quiet foo=1 bankboot.loader={kernel_token()} "
                    f"bankboot.kexec=1.1.0-abc")


def test_a_pin_is_honoured_only_after_a_kexec() -> None:
    assert check_pin("1.1.0-abc", "6.1.0-50-arm64@0badcafe") == "1.1.0-abc"  # another kernel started us
    assert check_pin("1.1.0-abc", kernel_token()) is None  # typed into the loader's own command line
    assert check_pin("1.1.0-abc", None) is None and check_pin(None, "x@1") is None


def _snap(**images) -> Snapshot:
    infos = {i: ImageInfo(i, st, tries, "", v, st == GOOD, False, 0, None) for i, (st, tries, v) in images.items()}
    return Snapshot(current="a", next="b" if "b" in images else None, previous=None, images=infos)


def test_pinned_trial_boots_without_spending_another_try() -> None:
    # The loader spent the last try: without the pin the plan would give the trial up.
    snap = _snap(a=(GOOD, 0, "1.0.0"), b=(TRIAL, 0, "1.1.0"))
    assert plan_boot(snap).candidates[0].image == "a"
    plan = plan_boot(snap, pinned="b")
    assert plan.candidates[0].image == "b" and plan.candidates[0].trial
    assert not [e for e in plan.effects if e.kind in ("spend_try", "mark_bad")]


def test_pin_on_a_committed_or_last_resort_image_and_unknown_pins_ignored() -> None:
    snap = _snap(a=(GOOD, 0, "1.0.0"), b=(TRIAL, 2, "1.1.0"), c=(BAD, 0, "1.0.1"))
    for pin in ("a", "c"):  # current; a bad image the loader booted as a last resort
        plan = plan_boot(snap, pinned=pin)  # the trial is not started here
        assert [c.image for c in plan.candidates][:1] == [pin] and not plan.candidates[0].trial
        assert not [e for e in plan.effects if e.kind == "spend_try"]
    plan = plan_boot(snap, pinned="nope")
    assert plan.candidates[0].image == "b" and any("ignored" in n for n in plan.notes)
    assert [e.image for e in plan.effects if e.kind == "spend_try"] == ["b"]
