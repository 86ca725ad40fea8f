"""initfs/kexec.cpus_held: a machine whose firmware started its other cores through a spin table (the
Raspberry Pis) cannot kexec, and the init says so before it tries; PSCI machines, a single possible CPU and
machines without a device tree (x86_64) can."""

from __future__ import annotations

from pathlib import Path

import pytest

from initfs import kexec

pytestmark = pytest.mark.unit


def _machine(tmp: Path, methods: list[str], possible: str | None) -> str:
    for i, method in enumerate(methods):
        d = tmp / f"proc/device-tree/cpus/cpu@{i}"
        d.mkdir(parents=True)
        (d / "enable-method").write_bytes(method.encode() + b"\0")
    (tmp / "proc/device-tree/cpus/l2-cache0").mkdir(parents=True, exist_ok=True)  # not a CPU
    if possible is not None:
        (tmp / "sys/devices/system/cpu").mkdir(parents=True)
        (tmp / "sys/devices/system/cpu/possible").write_text(possible + "\n")
    return str(tmp)


def test_spin_table_cores_hold_the_kexec(tmp_path: Path) -> None:
    why = kexec.cpus_held(_machine(tmp_path, ["spin-table"] * 4, "0-3"))
    assert why is not None and "spin table (cpu@0, cpu@1, cpu@2, cpu@3)" in why and "CPUs 0-3" in why


@pytest.mark.parametrize(("methods", "possible"), [(["psci"] * 4, "0-3"), (["spin-table"], "0"),
                                                   ([], "0-1")])
def test_psci_one_cpu_or_no_device_tree_can_kexec(tmp_path: Path, methods: list[str], possible: str) -> None:
    assert kexec.cpus_held(_machine(tmp_path, methods, possible)) is None


def test_load_refuses_before_it_tries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, held = _machine(tmp_path, ["spin-table"] * 4, "0-3"), kexec.cpus_held
    monkeypatch.setattr(kexec, "cpus_held", lambda: held(root))
    monkeypatch.setattr(kexec, "_run", lambda argv: pytest.fail(f"ran {argv}"))
    with pytest.raises(kexec.KexecError, match="spin table"):
        kexec.load("/k", "/i", "console=ttyS1", "tools")
    with pytest.raises(kexec.KexecError, match="initramfs.conf kexec=none"):
        kexec.load("/k", "/i", "console=ttyS1", "none")
