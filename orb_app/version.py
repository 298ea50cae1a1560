"""The version Orb reports on the wire."""

__version__ = "0.1.0"
