"""Reading the fetched Debian kernels' files (make deps)."""

from __future__ import annotations

from builder.kernelfile import read_kernel


def test_reads_debian_kernels(aarch64, x86_64) -> None:
    arm = read_kernel(aarch64.kernel.image)  # a gzip-compressed Image, read inflated, stored as given
    assert (arm.arch, arm.release) == ("arm64", aarch64.kernel.version) and arm.version.startswith("#1 ")
    assert arm.data == aarch64.kernel.image.read_bytes()
    x86 = read_kernel(x86_64.kernel.image)
    assert (x86.arch, x86.release) == ("amd64", x86_64.kernel.version) and "Debian" in x86.version
