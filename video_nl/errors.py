"""User-facing errors: the CLI prints these as one paragraph and exits non-zero (no traceback)."""


class UserError(Exception):
    """An error caused by the user's input (files, config, arguments), reported without a traceback."""
