"""Store implementations of the ports in ``protocol/ports.py``."""
