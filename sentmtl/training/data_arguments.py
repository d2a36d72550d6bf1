"""`DataArguments`: the flags that choose and read the run's data (the UCI corpus or your own files, the split,
evaluation bounds, streaming, the teacher cache), and their checks: flags the chosen data would ignore are refused."""

from dataclasses import dataclass, field

from ..data.corpus import LABEL_NAMES, SOURCES

DEFAULT_TEST_SIZE = 0.2


@dataclass
class DataArguments:
    data_dir: str | None = field(
        default=None,
        metadata={"help": "The UCI corpus: its unzipped folder or the zip. Default: download the official zip."},
    )
    sources: list[str] | None = field(
        default=None, metadata={"help": f"Corpus sources to use: any of {', '.join(SOURCES)}. Default: all three."}
    )
    train_file: str | None = field(
        default=None,
        metadata={"help": "Your own training data (.csv, .tsv, .json, .jsonl, .parquet) instead of the corpus."},
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Your own evaluation data; with --train_file alone, a split of it is used."}
    )
    text_column: str = field(default="sentence", metadata={"help": "Text column of --train_file / --validation_file."})
    label_column: str = field(default="label", metadata={"help": "Label column (ids, or names from --class_names)."})
    score_column: str = field(
        default="score", metadata={"help": "Task B score column in [0, 1]; derived from the label if absent."}
    )
    class_names: list[str] = field(
        default_factory=lambda: list(LABEL_NAMES),
        metadata={
            "help": "Task A class names in id order (two or more); string labels in your files are mapped through "
            "them, and the model's id2label, metrics, plots and card use them. The corpus takes two (a renaming)."
        },
    )
    test_size: float | None = field(
        default=None,
        metadata={
            "help": f"Held-out share for evaluation when the data is split (default {DEFAULT_TEST_SIZE}, the "
            "seed's 80/20); not with --validation_file."
        },
    )
    max_samples: int | None = field(
        default=None,
        metadata={"help": "Use a stratified subset of this many sentences (the seed's Task 4 used 1,000)."},
    )
    max_length: int = field(
        default=128, metadata={"help": "Truncate sentences to this many tokens (the corpus's longest is ~100)."}
    )
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={
            "help": "Pad each training and evaluation batch to a multiple of this many tokens (never past "
            "--max_length). Fewer distinct batch shapes: on the CPU oneDNN compiles and keeps kernels per shape and "
            "the heap fragments on ever-different sizes, so a long run's memory grows less. 1: pad to the longest "
            "row. Default: 8 for a streamed source (its lengths are not grouped), 1 otherwise."
        },
    )
    skip_bad_lines: bool = field(
        default=False,
        metadata={"help": "Skip unreadable corpus lines (with a report) instead of stopping at the first."},
    )
    sts_eval_file: str | None = field(
        default=None,
        metadata={
            "help": "Also measure the trained embedding on these STS-B pairs (e.g. sts-dev.csv): Spearman × 100 "
            "of the pair cosines, eval_stsb_spearman. make run passes ../shared's when it is there."
        },
    )
    max_eval_samples: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate each source on at most this many of its held-out rows (a seeded random subset; "
            "--sts_eval_file's pairs too): bounds the final evaluation's time and memory on large data. "
            "The results table says how many rows each task's metrics used."
        },
    )
    stream_buffer_size: int = field(
        default=10_000,
        metadata={
            "help": "A streamed source's shuffle buffer (rows; data: {..., streaming: true}): its training rows "
            "pass through a buffer of this many, drawn at random (seeded). Larger: closer to a full "
            "shuffle, more memory."
        },
    )
    teacher_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where distillation targets (teacher vectors) and mined hard negatives are cached, keyed by "
            "the teacher (miner) and the texts, so a second run on the same data reads them instead of embedding "
            "every row. "
            "Default: <datasets cache>/sentmtl_teacher_vectors. Delete the folder to clear it."
        },
    )
    # The run file's `tasks:` (RunTask objects, `sentmtl.data.plan`), set by parse_args; not a command-line flag.
    tasks: list | None = field(default=None, init=False)

    def __post_init__(self):
        unknown = [source for source in self.sources or () if source not in SOURCES]
        if unknown:
            raise ValueError(f"--sources {unknown} not known; choose from {', '.join(SOURCES)}.")
        if self.test_size is not None and not 0.0 < self.test_size < 1.0:
            raise ValueError(f"--test_size {self.test_size} must be between 0 and 1 (exclusive).")
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"--class_names {self.class_names}: give two or more distinct names, in id order.")
        # Flags that only mean something for the corpus or for a split would otherwise be silently ignored.
        if self.train_file:
            corpus_only = [f"--{name}" for name in ("sources", "data_dir") if getattr(self, name) is not None]
            corpus_only += ["--skip_bad_lines"] if self.skip_bad_lines else []
            if corpus_only:
                raise ValueError(
                    f"{', '.join(corpus_only)} select(s) and read(s) the UCI corpus; with --train_file "
                    "the corpus is not used. Drop them, or drop --train_file."
                )
        elif len(self.class_names) != 2:
            raise ValueError(
                f"--class_names {self.class_names}: the UCI corpus has two classes (negative, "
                "positive); more classes need your own --train_file."
            )
        if self.validation_file and self.test_size is not None:
            raise ValueError(
                "--test_size sets the held-out share of a split; with --validation_file there is no "
                "split. Drop one of them."
            )
        if self.pad_to_multiple_of is not None and self.pad_to_multiple_of < 1:
            raise ValueError(
                f"--pad_to_multiple_of {self.pad_to_multiple_of} must be at least 1 (1: pad to the longest row)."
            )
        if self.stream_buffer_size < 1:
            raise ValueError(f"--stream_buffer_size {self.stream_buffer_size} must be at least 1.")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise ValueError(f"--max_eval_samples {self.max_eval_samples} must be at least 1.")
        if self.max_samples is not None and self.max_samples < 2:
            raise ValueError(f"--max_samples {self.max_samples} must be at least 2.")
        if self.validation_file and not self.train_file:
            raise ValueError("--validation_file needs --train_file as well.")
        if self.validation_file and self.max_samples is not None:
            # It would otherwise be ignored: with both files given there is no split to take a subset from.
            raise ValueError(
                "--max_samples subsets the data before the train/test split; with --validation_file "
                "there is no split, so trim your files instead."
            )

    @property
    def split_test_size(self) -> float:
        return DEFAULT_TEST_SIZE if self.test_size is None else self.test_size
