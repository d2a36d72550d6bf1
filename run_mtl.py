#!/usr/bin/env python
"""Train, evaluate and save a multi-task sentence transformer.

python run_mtl.py                                   # the seed's main run on the bundled encoder
python run_mtl.py configs/quick.yaml --data_dir ../shared/data/sentiment_labelled_sentences
accelerate launch run_mtl.py --freeze_backbone
python run_mtl.py --help                            # every option, with help
"""

import sys

from sentmtl.training.run import main

if __name__ == "__main__":
    sys.exit(main())
