"""Renderers: one module per output format. Only these and the CLI write text."""
