"""bankboot's errors on the device share one base that carries the exit code and whether a retry may help
(overlay_layout/errors.py): every exception class in overlay_layout and initfs derives from it, each code
is one of the table's, and the table is the list docs/lifecycle.md gives users."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import initfs
import overlay_layout
from overlay_layout.errors import EXIT_CODES, BankbootError, verdict

ROOT = Path(__file__).resolve().parents[2]
NOT_ERRORS = {"overlay_layout.net.download.Downloaded"}  # a download_only stage's end: control flow, not an error


def device_exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (overlay_layout, initfs):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == info.name:
                    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [cls for name, cls in sorted(found.items()) if name not in NOT_ERRORS]


def test_every_device_error_derives_from_the_one_base_with_a_code_of_the_table() -> None:
    classes = device_exception_classes()
    assert len(classes) > 30
    strays = [c.__qualname__ for c in classes if not issubclass(c, BankbootError)]
    assert not strays, f"exception classes without the BankbootError base: {strays}"
    assert {c.__qualname__: c.exit_code for c in classes if c.exit_code not in EXIT_CODES} == {}


def test_the_classes_exit_with_the_codes_the_docs_name() -> None:
    from initfs.poll import NotNow, PollFailed
    from overlay_layout.layout import LayoutError
    from overlay_layout.lock import LockError
    from overlay_layout.net.download import DownloadError
    from overlay_layout.net.errors import ConnectError
    from overlay_layout.stage import StageError
    from overlay_layout.state import StateError
    from overlay_layout.trust import TrustError

    codes = {c.__name__: c.exit_code for c in (StageError, DownloadError, PollFailed, StateError, NotNow, LockError,
                                                 LayoutError, TrustError, ConnectError)}
    assert codes == {"StageError": 4, "DownloadError": 4, "PollFailed": 4, "StateError": 3, "NotNow": 3,
                     "LockError": 5, "LayoutError": 1, "TrustError": 1, "ConnectError": 1}
    assert LockError.transient and ConnectError.transient and not StateError.transient


def test_failed_or_refused_is_decided_by_the_attribute_not_the_words() -> None:
    from overlay_layout.net.download import DownloadError
    from overlay_layout.stage import StageError

    assert verdict(DownloadError("a 404", False)) == "refused: "
    assert verdict(DownloadError("a cut link", True)) == "failed: "
    assert verdict(DownloadError("the same command resumes", False)) == "refused: "
    assert verdict(StageError("hash mismatch")) == "refused: "
    assert verdict(BankbootError("a damaged layout")) == ""


def test_the_docs_list_the_exit_codes_of_the_table() -> None:
    text = (ROOT / "docs/lifecycle.md").read_text()
    listed = text.split("Exit codes (stable):", 1)[1].split("Messages go", 1)[0]
    pairs = re.findall(r"`(\d+)` (.+?)(?= \(|;|\.)", " ".join(listed.split()))
    documented = {int(code): words for code, words in pairs}
    assert documented == EXIT_CODES
