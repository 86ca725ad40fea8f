"""The service that runs `bankctl poll --every` in an image: one configuration file, /etc/bankboot/poll.conf
(in the signed image: which channel a device follows is part of its release), read by a systemd unit on
systemd images and by an init script on busybox ones such as the sample image (builder/lab/samplerootfs.py).

poll.conf is KEY=value lines that both systemd's EnvironmentFile= and a shell read alike:

    URL=https://updates.example.com/fleet/stable.json
    EVERY=6h
    OPTIONS="--reboot"

Both start the loop only on a bankboot boot (/run/bankboot/booted) and after the image has confirmed or
committed itself (the poll would wait for that anyway: it does nothing while the running image is on
trial or unconfirmed)."""

from __future__ import annotations

from pathlib import Path

from builder.errors import BuildError
from overlay_layout.contract import BIN, BOOTED, POLL_CONF, archive_path

UNIT_NAME = "bankctl-poll.service"
INIT_SCRIPT = "/etc/init.d/bankctl-poll"
LOG = "/var/log/bankctl-poll.log"
PIDFILE = "/run/bankctl-poll.pid"

UNIT = f"""\
# {UNIT_NAME}: bankboot's channel poller (docs/fleet.md). Settings in {POLL_CONF}.
[Unit]
Description=Poll the bankboot update channel and stage what it offers
Wants=network-online.target
After=network-online.target boot-complete.target
ConditionPathExists={BOOTED}
ConditionPathExists={POLL_CONF}

[Service]
Type=simple
EnvironmentFile={POLL_CONF}
ExecStart={BIN}/bankctl poll --every ${{EVERY}} $OPTIONS ${{URL}}
Restart=on-failure
RestartSec=60

[Install]
WantedBy=multi-user.target
"""

INIT = f"""\
#!/bin/sh
# {INIT_SCRIPT} start|stop|status: bankboot's channel poller (docs/fleet.md). Settings in {POLL_CONF};
# output in {LOG} (the last 256 KB kept at each start).
conf={POLL_CONF}
LOG={LOG}
case "$1" in
  start)
    [ -e {BOOTED} ] && [ -r "$conf" ] || exit 0
    . "$conf"
    [ -n "$URL" ] || {{ echo "bankctl-poll: no URL in $conf"; exit 1; }}
    mkdir -p "${{LOG%/*}}"
    [ -f {LOG} ] && tail -c 262144 {LOG} >{LOG}.new && mv {LOG}.new {LOG}
    {BIN}/bankctl poll --every "${{EVERY:-6h}}" $OPTIONS "$URL" </dev/null >>{LOG} 2>&1 &
    echo $! >{PIDFILE}
    echo "bankctl-poll: polling $URL every ${{EVERY:-6h}}"
    ;;
  stop)
    [ -f {PIDFILE} ] && kill "$(cat {PIDFILE})" 2>/dev/null; rm -f {PIDFILE}
    ;;
  status)
    [ -f {PIDFILE} ] && kill -0 "$(cat {PIDFILE})" 2>/dev/null && echo "bankctl-poll: running" && exit 0
    echo "bankctl-poll: not running"; exit 3
    ;;
  *) echo "usage: $0 start|stop|status"; exit 2 ;;
esac
"""


class PollServiceError(BuildError, ValueError):
    """A poll.conf value that systemd and sh would not read alike."""


def poll_conf(url: str, every: str = "6h", options: str = "--reboot") -> str:
    for name, value in (("URL", url), ("EVERY", every), ("OPTIONS", options)):
        if any(c in value for c in "\"'$`\\\n"):
            raise PollServiceError(f"poll.conf {name}={value!r}: no quotes, $, ` or \\ (systemd and sh read it alike)")
    return f"URL={url}\nEVERY={every}\nOPTIONS=\"{options}\"\n"


def install_poll_service(rootfs: Path, url: str, every: str = "6h", options: str = "--reboot") -> None:
    """poll.conf, the init script, and the systemd unit (enabled) where the rootfs has systemd."""
    conf = rootfs / archive_path(POLL_CONF)
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(poll_conf(url, every, options))
    script = rootfs / archive_path(INIT_SCRIPT)
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(INIT)
    script.chmod(0o755)
    if (rootfs / "lib/systemd/systemd").exists() or (rootfs / "usr/lib/systemd/systemd").exists():
        units = rootfs / "etc/systemd/system"
        (units / "multi-user.target.wants").mkdir(parents=True, exist_ok=True)
        (units / UNIT_NAME).write_text(UNIT)
        link = units / "multi-user.target.wants" / UNIT_NAME
        if not link.is_symlink():
            link.symlink_to(f"../{UNIT_NAME}")
