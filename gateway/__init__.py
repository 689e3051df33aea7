"""The shell around the rules: CLI, configuration, stores and (next) the aiohttp data plane.

Foreign exceptions (sqlite3, redis, aiohttp) are translated into
:class:`protocol.errors.BatonError` at this boundary.
"""
