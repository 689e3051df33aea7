"""atheris harness: mcp, a2a, sse, agent_card (see fuzz/README.md).

.venv/bin/python fuzz/fuzz_adapters.py -max_total_time=60
"""

from _harness import main

if __name__ == "__main__":
    main("adapters", ["mcp", "a2a", "sse", "agent_card"])
