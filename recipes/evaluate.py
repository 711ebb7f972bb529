"""Evaluate and compare models on retrieval sets with ranx (significance, per-query analysis, plots).

    python recipes/evaluate.py --config recipes/eval/mbpp.yaml [--any_field value ...]

The same as `st-bge eval recipes/eval/mbpp.yaml [--any_field value ...]`.
"""

import sys

from st_bge.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
