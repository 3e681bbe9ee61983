"""The pure engine: no asyncio, sockets, file I/O or clock reads.

Imports only the standard library, polars, msgspec, exchange-calendars and itself.
"""
