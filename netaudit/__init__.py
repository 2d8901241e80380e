"""netaudit: audit the network exposure of PyTorch distributed services.

Importing this package is cheap on purpose (a Slurm prolog imports it): no third-party
module is imported here.
"""

__version__ = "0.1.0"
