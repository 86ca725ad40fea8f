from __future__ import annotations

from initfs.cmdline import Cmdline, split_cmdline
from initfs.switchroot import clean_environ


def test_plain_and_flag_parameters() -> None:
    assert split_cmdline("console=ttyAMA0 rootwait  ro\n") == [("console", "ttyAMA0"), ("rootwait", None),
                                                              ("ro", None)]


def test_quoted_values_and_quoted_parameters() -> None:
    assert split_cmdline('a="b c" "d=e f" g="" "h"') == [("a", "b c"), ("d", "e f"), ("g", ""), ("h", None)]
    assert split_cmdline('x=a"b c"d y') == [("x", 'a"b c"d'), ("y", None)]


def test_double_dash_ends_the_kernel_part() -> None:
    assert split_cmdline("quiet -- single init_arg=1") == [("quiet", None)]


def test_repeated_keys_last_wins_and_all_are_kept() -> None:
    c = Cmdline("console=tty0 console=ttyS0 bankboot.debug root=/dev/vda2")
    assert c.get("console") == "ttyS0"
    assert c.get_all("console") == ["tty0", "ttyS0"]
    assert c.has("bankboot.debug") and c.get("bankboot.debug") == ""
    assert c.get("missing", "dflt") == "dflt"


def test_clean_environ_restores_what_pyinstaller_changed() -> None:
    env = {"LD_LIBRARY_PATH": "/bankboot:/opt/lib", "LD_LIBRARY_PATH_ORIG": "/opt/lib",
           "_PYI_ARCHIVE_FILE": "/init", "_PYI_APPLICATION_HOME_DIR": "/bankboot", "_MEIPASS2": "/x",
           "HOME": "/", "TERM": "linux"}
    assert clean_environ(env) == {"LD_LIBRARY_PATH": "/opt/lib", "HOME": "/", "TERM": "linux",
                                  "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def test_clean_environ_drops_a_library_path_that_had_no_original() -> None:
    env = {"LD_LIBRARY_PATH": "/bankboot", "PATH": "/bin"}
    assert clean_environ(env) == {"PATH": "/bin"}
