"""Entry point of the frozen program. One bundle, several programs: the name it was started as decides
(the initramfs /init now; bankctl later)."""

import sys


def run() -> None:
    from initfs.main import main

    main()


if __name__ == "__main__":
    run()
    sys.exit(0)
