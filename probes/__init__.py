"""Service signatures shipped with netaudit: TOML data files, one per service.

This package holds no code; it exists so the files travel inside the wheel and are found the
same way from a checkout and from an install (importlib.resources). See docs/signatures.md.
"""
