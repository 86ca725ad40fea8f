"""HTTPS for the device: the TLS piece (OpenSSL and Python's `_ssl` from the board's Debian Python
sysroot, overlay_layout/net/tlspiece.py) that `bankboot initramfs` writes beside the initramfs, and a test
CA for `bankboot serve --tls` and the tests (certificates made with Debian's `openssl`)."""

from __future__ import annotations

import functools
from pathlib import Path

from builder.errors import BuildError
from builder.pysysroot import PySysroot
from builder.run import find_tool, run
from overlay_layout.net.tlspiece import EXTENSIONS, LIBRARIES, MODULES, pack


class TlsBuildError(BuildError):
    pass


@functools.lru_cache(maxsize=8)
def _piece(root: Path, triplet: str, arch: str, stamp: str) -> bytes:
    files = []
    for lib in LIBRARIES:
        path = root / "usr/lib" / triplet / lib
        if not path.is_file():
            raise TlsBuildError(f"{path} is missing from the Python sysroot (libssl3): run `make deps`")
        files.append((lib, path.resolve().read_bytes()))
    for ext in EXTENSIONS:
        found = sorted((root / "usr/lib").glob(f"python3.*/lib-dynload/{ext}.cpython-*-{triplet}.so"))
        if not found:
            raise TlsBuildError(f"no {ext} extension in the Python sysroot's lib-dynload: run `make deps`")
        files.append((found[0].name, found[0].read_bytes()))
    for mod in MODULES:
        found = sorted((root / "usr/lib").glob(f"python3.*/{mod}.py"))
        if not found:
            raise TlsBuildError(f"no {mod}.py in the Python sysroot: run `make deps`")
        files.append((f"{mod}.py", found[0].read_bytes()))
    python = next((line.split()[1] for line in stamp.splitlines() if line.startswith("libpython3.11-stdlib ")), "")
    return pack(files, arch, python)


def tls_piece(sysroot: PySysroot) -> bytes:
    """The piece for the bundle frozen from `sysroot` (the same Debian Python build: its `_ssl` fits)."""
    return _piece(sysroot.root, sysroot.arch.triplet, sysroot.arch.debian, sysroot.stamp)


def piece_path(initramfs: Path) -> Path:
    """Where `bankboot initramfs -o X.img` writes the piece: X.tls."""
    return initramfs.with_suffix(".tls")


# --- A certificate authority for tests and `bankboot serve --tls`. ---------------------------------------
def _openssl(*args: str, cwd: Path | None = None) -> None:
    run([find_tool("openssl", "openssl", TlsBuildError), *args], error=TlsBuildError, cwd=cwd)


def make_ca(directory: Path, name: str = "bankboot test CA") -> tuple[Path, Path]:
    """A CA key and self-signed certificate in `directory`: (ca.pem, ca.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "3650", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def make_cert(ca: tuple[Path, Path], directory: Path, name: str, hosts: tuple[str, ...] = (), client: bool = False,
              start: str | None = None, end: str | None = None) -> tuple[Path, Path]:
    """A key and a certificate signed by `ca` for a server (`hosts`: DNS names and IP addresses in its
    subjectAltName) or a client; start/end (YYYYMMDDHHMMSSZ) make an expired or not yet valid one.
    Returns (NAME.pem, NAME.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, csr = directory / f"{name}.pem", directory / f"{name}.key", directory / f"{name}.csr"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={name}")
    alt = ",".join(f"{'IP' if _is_ip(h) else 'DNS'}:{h}" for h in hosts)
    ext = directory / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\n"
                   f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n"
                   + (f"subjectAltName={alt}\n" if alt else ""))
    if start or end:  # `openssl x509` cannot back-date; `openssl ca` can
        db = directory / f"{name}.db"
        db.mkdir(exist_ok=True)
        (db / "index.txt").write_text("")
        (db / "serial").write_text("1000\n")
        conf = directory / f"{name}.cnf"
        conf.write_text(f"[ca]\ndefault_ca=c\n[c]\ndatabase={db}/index.txt\nserial={db}/serial\nnew_certs_dir={db}\n"
                        f"default_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n")
        _openssl("ca", "-batch", "-config", str(conf), "-cert", str(ca[0]), "-keyfile", str(ca[1]), "-in", str(csr),
                 "-out", str(cert), "-startdate", start or "20200101000000Z", "-enddate", end or "20300101000000Z",
                 "-extfile", str(ext), "-notext")
    else:
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
                 "-out", str(cert), "-days", "825", "-extfile", str(ext))
    key.chmod(0o600)
    return cert, key


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
