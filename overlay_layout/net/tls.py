"""HTTPS for `bankctl stage`: Python's ssl over OpenSSL, TLS 1.2 or later, the server's certificate
checked against a CA bundle and for the host name, and an optional client certificate (mTLS).

The CA bundle is, in this order: `--ca FILE`, the one built into the initramfs from the board file
(network.ca, /etc/bankboot/ca.pem in the kit), the running image's /etc/ssl/certs/ca-certificates.crt. The
client certificate and key are files on the device (`--cert`/`--key`, or the board file's
network.client_cert/client_key: paths such as /userdata/bankboot/device.crt), provisioned per device;
never taken from the banks partition (images are shared by a fleet, a device's key is not).

The frozen bankctl carries no ssl: `load` (bankctl's) brings it from the kit's TLS piece the first time an
https URL is fetched (tlspiece.py). Failures are TlsErrors that say what is wrong in words a person can act
on: an unknown CA, a certificate for another host, an expired one (or a device clock that is wrong), a
client certificate the server refused or wanted."""

from __future__ import annotations

import os
import socket
import time

from overlay_layout.net.errors import LinkError, NetError, TlsError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"

# OpenSSL's X509_V_ERR_* codes, as ssl.SSLCertVerificationError.verify_code gives them.
_UNKNOWN_CA = {2, 18, 19, 20, 21, 24, 27, 28}
_EXPIRED, _NOT_YET_VALID, _HOSTNAME, _IP_ADDRESS = 10, 9, 62, 64
# Alerts a server sends when it refuses (or wants) a client certificate, by OpenSSL's reason code.
_CLIENT_CERT_REFUSED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_ALERT_UNKNOWN_CA",
                        "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_ACCESS_DENIED",
                        "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_REVOKED",
                        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", "PEER_DID_NOT_RETURN_A_CERTIFICATE"}
_OLD_PROTOCOL = {"UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}


class TlsOptions:
    """What a stage over https uses. `ca`: a PEM bundle; `cert`/`key`: the client's (key may be in cert);
    `load`: makes `import ssl` work where the program does not carry it (the kit's TLS piece)."""

    __slots__ = ("ca", "cert", "key", "load")

    def __init__(self, ca: str | None = None, cert: str | None = None, key: str | None = None,
                 load: Callable[[], None] | None = None) -> None:
        self.ca, self.cert, self.key, self.load = ca, cert, key, load


def ensure_ssl(load: Callable[[], None] | None) -> None:
    """Make `import ssl` work: it does on a host; the frozen bankctl loads its TLS piece first."""
    try:
        import ssl  # noqa: F401
    except ImportError:
        if load is None:
            raise TlsError("this bankctl carries no TLS (https) support", "no-tls") from None
        load()


class Tls:
    """The TLS side of one stage: one context (certificates are read once), used by every connection."""

    def __init__(self, options: TlsOptions) -> None:
        self.options = options
        self._context: ssl.SSLContext | None = None

    @property
    def ca(self) -> str:
        return self.options.ca or SYSTEM_CA

    def context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = self._make_context()
        return self._context

    def _make_context(self) -> ssl.SSLContext:
        ensure_ssl(self.options.load)
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # certificates and host names checked
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ca = self.ca
        if not os.path.isfile(ca):
            where = "--ca" if self.options.ca else "this image has no CA bundle at"
            raise TlsError(f"{where} {ca}: no such file; give the CA that signed the server's certificate with "
                           f"--ca FILE (or network.ca in the board file)", "unknown-ca")
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError, ValueError) as e:
            raise TlsError(f"the CA bundle {ca} cannot be read as PEM certificates: {_reason(e)}", "unknown-ca") from e
        cert, key = self.options.cert, self.options.key
        if key and not cert:
            raise TlsError("--key without --cert: a client key needs its certificate", "client-cert")
        if cert:
            for path in (cert, key):
                if path and _on_banks(path):
                    raise TlsError(f"{path} is on the banks partition: a device's client certificate and key are "
                                   f"its own (keep them on /userdata, say), never in the images a fleet shares",
                                   "client-cert")
            if not os.path.isfile(cert) or (key and not os.path.isfile(key)):
                missing = cert if not os.path.isfile(cert) else key
                raise TlsError(f"the client certificate or key {missing} does not exist", "client-cert")

            def no_password() -> str:
                raise TlsError(f"the client key {key or cert} is encrypted with a password; bankctl needs it "
                               f"unencrypted (readable by root only)", "client-cert")

            try:
                ctx.load_cert_chain(cert, key, password=no_password)
            except ssl.SSLError as e:
                what = ("does not belong to the certificate" if "KEY_VALUES_MISMATCH" in (e.reason or "")
                        else f"cannot be read as PEM: {_reason(e)}")
                raise TlsError(f"the client certificate {cert} or its key {key or cert} {what}", "client-cert") from e
        return ctx

    def wrap(self, sock: socket.socket, host: str) -> socket.socket:
        """TLS over a connected socket to `host` (the name checked against the certificate; no SNI for an
        IP address, whose certificate must name the address itself)."""
        ctx = self.context()  # first: it makes `import ssl` work
        import ssl

        try:
            # bytes: a str goes through the idna codec, which the frozen program does not carry (names are
            # ASCII already: url.py)
            return ctx.wrap_socket(sock, server_hostname=host.partition("%")[0].encode("ascii"))
        except ssl.SSLCertVerificationError as e:
            raise self.explain_certificate(e, host) from e
        except (ssl.SSLEOFError, ConnectionError, TimeoutError) as e:
            raise LinkError(f"{host}: the connection broke during the TLS handshake: {_reason(e)}") from e
        except ssl.SSLError as e:
            raise self.explain_alert(e, host) from e
        except OSError as e:
            raise LinkError(f"{host}: the TLS handshake failed: {e.strerror or e}") from e

    def explain_certificate(self, e: ssl.SSLCertVerificationError, host: str) -> TlsError:
        code = e.verify_code
        if code in _UNKNOWN_CA:
            return TlsError(f"{host}: the server's certificate is not signed by a CA this device trusts (CA "
                            f"bundle {self.ca}: {e.verify_message}); give the CA with --ca FILE, or network.ca in "
                            f"the board file", "unknown-ca")
        if code in (_HOSTNAME, _IP_ADDRESS):
            return TlsError(f"{host}: the server's certificate is for another host name ({e.verify_message}); "
                            f"use the name the certificate was made for", "hostname")
        if code in (_EXPIRED, _NOT_YET_VALID):
            word = "has expired" if code == _EXPIRED else "is not valid yet"
            return TlsError(f"{host}: the server's certificate {word}, by this device's clock "
                            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); if that clock is wrong, set it "
                            f"(NTP) and try again", "expired" if code == _EXPIRED else "not-yet-valid")
        return TlsError(f"{host}: the server's certificate was refused: {e.verify_message}", "certificate")

    def explain_alert(self, e: ssl.SSLError, host: str) -> NetError:
        reason = e.reason or ""
        if reason in _CLIENT_CERT_REFUSED:
            if not self.options.cert:
                return TlsError(f"{host}: the server wants a client certificate and this device gave none "
                                f"({reason}); give --cert/--key, or network.client_cert/client_key in the "
                                f"board file", "client-cert-refused")
            return TlsError(f"{host}: the server refused this device's client certificate {self.options.cert} "
                            f"({reason}): is it signed by a CA the server trusts, and still valid?",
                            "client-cert-refused")
        if reason in _OLD_PROTOCOL:
            return TlsError(f"{host}: the server offers no TLS 1.2 or later ({reason}); bankctl refuses older "
                            f"TLS", "protocol")
        if reason in _NOT_TLS:
            return TlsError(f"{host}: the server does not speak TLS on that port ({reason}): is the URL http:// "
                            f"rather than https://?", "no-tls")
        return TlsError(f"{host}: the TLS handshake failed: {_reason(e)}", "protocol")


    def explain_read(self, e: OSError, host: str) -> NetError | None:
        """TLS 1.3 servers refuse a client certificate after the handshake, at the first read: the alert
        arrives as an SSLError from recv. The TlsError for it, or None when `e` is not one."""
        import ssl

        if isinstance(e, ssl.SSLError) and not isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return self.explain_alert(e, host)
        return None


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None)
    return str(reason) if reason else (getattr(e, "strerror", None) or str(e) or type(e).__name__)


def _on_banks(path: str) -> bool:
    from overlay_layout.contract import BANKS

    real = os.path.realpath(path)
    return real == BANKS or real.startswith(BANKS + "/")
