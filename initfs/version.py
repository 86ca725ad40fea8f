"""The one place bankboot's version lives (pyproject reads it; the init prints it)."""

VERSION = "0.1.0"
