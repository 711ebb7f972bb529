"""Fine-tune an embedding model from a recipe.

    accelerate launch [--config_file accelerate_configs/cpu.yaml] recipes/train.py \
        --config recipes/quickstart.yaml [--any_field value ...]

The same as `st-bge train recipes/quickstart.yaml [--any_field value ...]`.
"""

import sys

from st_bge.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
