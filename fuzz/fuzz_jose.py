"""atheris harness: jws, jwe, capsule (see fuzz/README.md).

.venv/bin/python fuzz/fuzz_jose.py -max_total_time=60
"""

from _harness import main

if __name__ == "__main__":
    main("jose", ["jws", "jwe", "capsule"])
