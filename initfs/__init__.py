"""bankboot's PID-1 program. Imports here stay minimal: this package runs on slow boards at boot.

VERSION is the one place bankboot's version lives (pyproject reads it; the init prints it): here, not in a
module of its own, because the init imports this package anyway and a module more costs every boot."""

VERSION = "0.1.0"
