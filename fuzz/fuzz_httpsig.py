"""atheris harness: sfv, httpsig (see fuzz/README.md).

.venv/bin/python fuzz/fuzz_httpsig.py -max_total_time=60
"""

from _harness import main

if __name__ == "__main__":
    main("httpsig", ["sfv", "httpsig"])
