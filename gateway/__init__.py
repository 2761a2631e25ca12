"""Satu Pintu: the gateway (HTTP API, store, relay, tracker, command line)."""

__version__ = "0.1.0"
