"""atheris harness: strictjson, jsonrpc (see fuzz/README.md).

.venv/bin/python fuzz/fuzz_json.py -max_total_time=60
"""

from _harness import main

if __name__ == "__main__":
    main("json", ["strictjson", "jsonrpc"])
