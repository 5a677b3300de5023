"""atheris harness for the uuid protocol's decoders (see docs/security.md):

python fuzz/fuzz_uuid.py -max_total_time=300 -malloc_limit_mb=64
"""

from harness import main

if __name__ == "__main__":
    main("uuid")
