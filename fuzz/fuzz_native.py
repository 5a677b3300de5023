"""atheris harness for the native protocol's decoders (see docs/security.md):

python fuzz/fuzz_native.py -max_total_time=300 -malloc_limit_mb=64
"""

from harness import main

if __name__ == "__main__":
    main("native")
