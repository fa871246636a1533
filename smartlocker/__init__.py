"""smartlocker: an open-source smart parcel-locker platform.

Subpackages follow the architecture: ``protocol`` (the wire contract, no I/O),
``edge_agent`` (the cabinet), ``cloud`` (ingest, business rules, API) and
``simulators``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
