"""Wire dialects: MCP (both eras) and A2A (v1.0, v0.3). Parse and render, no sockets.

Empty until the protocol-adapter work: it will turn protocol bytes into a typed
``Call`` and render :class:`protocol.errors.BatonError` in each protocol's own
error shape, keeping the MCP and A2A code spaces apart.
"""
