#!/usr/bin/env python
"""Embed sentences with a sentmtl checkpoint or a plain encoder (or export it for sentence-transformers).

python run_embed.py "The plot twists were unexpected." "The service was satisfactory."
python run_embed.py --input_file sentences.txt --output_file embeddings.npy --model_name_or_path out/
python run_embed.py --model_name_or_path out/ --export_sentence_transformer out-st/
python run_embed.py --help                          # every option, with help
"""

import sys

from sentmtl.serving.embed_cli import main

if __name__ == "__main__":
    sys.exit(main())
