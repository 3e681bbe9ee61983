"""market-monitor: a streaming monitor of US small-cap rallies."""

__version__ = "0.1.0"
