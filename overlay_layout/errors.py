"""The one base of bankboot's errors on the device (overlay_layout, initfs, bankctl), so that callers decide
by type and attribute, never by the words of a message: `exit_code` is what bankctl exits with when the
error ends a command, `transient` whether trying the same thing again may help (a cut link, a busy banks
partition: yes; a bad signature, a 404, a state that forbids it: no).

Each class carries its code (a subclass inherits it); EXIT_CODES is the one list of the codes and what
they mean, which docs/lifecycle.md's list is checked against (tests/unit/test_errors.py). Imported at
boot: it imports nothing."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_REFUSED, EXIT_STAGE, EXIT_BUSY = 0, 1, 2, 3, 4, 5

# bankctl's exit codes (stable) and what each means, in the words docs/lifecycle.md opens them with.
EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_ERROR: "error",
    EXIT_USAGE: "usage",
    EXIT_REFUSED: "refused by the state",
    EXIT_STAGE: "`stage` refused the image",
    EXIT_BUSY: "another bankctl holds the banks partition",
}


class BankbootError(RuntimeError):
    """Something bankboot checked or did went wrong; the message names the thing at fault and what to do."""

    exit_code = EXIT_ERROR
    transient = False


class Refused(BankbootError):
    """The state of the device forbids the command now (nothing on trial, no previous image, not now)."""

    exit_code = EXIT_REFUSED


class Busy(BankbootError):
    """Another bankctl holds the banks partition: the same command later succeeds."""

    exit_code = EXIT_BUSY
    transient = True


def verdict(e: BaseException) -> str:
    """The word bankctl puts before a stage's error (exit 4): `failed: ` when a retry may help (the same
    command resumes), `refused: ` when it will not; nothing before any other error."""
    if getattr(e, "exit_code", None) != EXIT_STAGE:
        return ""
    return "failed: " if getattr(e, "transient", False) else "refused: "
