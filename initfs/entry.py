"""Entry point of the frozen program. One bundle, two programs: the initramfs /init, and bankctl (run as
BANKBOOT_ENTRY=bankctl by the /run/bankboot/bin/bankctl script, or under the name bankctl)."""

import os
import sys


def run() -> None:
    # As PID 1 it is the init, whatever the environment says: the kernel turns words of its command line
    # into the init's environment (BANKBOOT_ENTRY=bankctl on a changed command line must not choose).
    name = os.environ.get("BANKBOOT_ENTRY") or os.path.basename(sys.argv[0])
    if name == "bankctl" and os.getpid() != 1:
        from initfs.bankctl import main as bankctl

        sys.exit(bankctl(sys.argv[1:]))
    # The init never runs long enough to need the cycle collector, and it execs the image at the end: its
    # collections during the boot's imports and JSON were a millisecond or more of every boot.
    import gc

    gc.disable()
    from initfs.main import main

    main()


if __name__ == "__main__":
    run()
    sys.exit(0)
