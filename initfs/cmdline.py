"""The kernel command line, split with the kernel's own quoting rules (kernel/params.c next_arg):
spaces separate parameters; double quotes group, either around a value (`a="b c"`) or around a whole
parameter (`"a=b c"`); the quotes around a value are dropped; `--` ends the kernel's part."""

from __future__ import annotations


def split_cmdline(text: str) -> list[tuple[str, str | None]]:
    params: list[tuple[str, str | None]] = []
    s = text.strip()
    while s:
        quoted = in_quote = s[0] == '"'
        if quoted:
            s = s[1:]
        equals = -1
        i = 0
        while i < len(s):
            ch = s[i]
            if ch.isspace() and not in_quote:
                break
            if equals < 0 and ch == "=":
                equals = i
            if ch == '"':
                in_quote = not in_quote
            i += 1
        raw, s = s[:i], s[i:].lstrip()
        end = raw[:-1] if raw.endswith('"') else raw
        if equals < 0:
            key, value = (end if quoted else raw), None
        else:
            key, value = raw[:equals], raw[equals + 1:]
            if value.startswith('"'):
                value = value[1:]
                if value.endswith('"'):
                    value = value[:-1]
            elif quoted and value.endswith('"'):
                value = value[:-1]
        if key == "--" and value is None:
            break
        params.append((key, value))
    return params


class Cmdline:
    """Lookups over the parsed command line. A repeated key: the last one wins for get(), as for most
    kernel parameters; get_all() gives every value (console= may be given several times)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.params = split_cmdline(text)

    @classmethod
    def from_proc(cls, path: str = "/proc/cmdline") -> Cmdline:
        with open(path) as f:
            return cls(f.read())

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in reversed(self.params):
            if k == key:
                return v if v is not None else ""
        return default

    def get_all(self, key: str) -> list[str]:
        return [v if v is not None else "" for k, v in self.params if k == key]

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.params)
