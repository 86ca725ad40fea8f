"""bankboot's PID-1 program. Imports here stay minimal: this package runs on slow boards at boot."""
