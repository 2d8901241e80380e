"""`python -m netaudit`, the same as the console script."""

from netaudit.cli import run

run()
