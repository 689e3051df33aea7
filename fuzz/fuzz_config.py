"""atheris harness: config (see fuzz/README.md).

.venv/bin/python fuzz/fuzz_config.py -max_total_time=60
"""

from _harness import main

if __name__ == "__main__":
    main("config", ["config"])
