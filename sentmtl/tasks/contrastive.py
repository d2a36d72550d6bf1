"""The contrastive task type's run half: retrieval pairs, their data options (hard-negative columns, a minimum score,
distractor documents, mined hard negatives) and row protocol (ids numbering a table's distinct texts, rows below the score left out of
training, no text twice in a batch), and the retrieval metrics of its evaluation."""

import numpy as np

from ..model.task_types import DEFAULT_SCALE
from . import metrics as m
from .io import (
    DEFAULT_TEXT_PAIR_COLUMN,
    DataOption,
    MiningRequest,
    TaskIO,
    check_column_list,
    check_number,
    register_task_io,
)
from .labels import as_number, is_absent
from .mining_settings import check_hard_negatives, mining_settings


def _check_distractors(value) -> None:
    ok = isinstance(value, dict) and (set(value) == {"stsb"} or ("file" in value and set(value) <= {"file", "columns"}))
    if not ok:
        raise ValueError(
            f"distractors {value!r}: use {{stsb: folder}} or {{file: path, columns: [...]}} (columns default to "
            "the task's text columns)."
        )
    columns = value.get("columns")
    if columns is not None and (
        not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)
    ):
        raise ValueError(f"distractors columns {columns!r}: a non-empty list of column names (or leave it out).")


@register_task_io
class ContrastiveIO(TaskIO):
    """Targets: per row `[flag, anchor id, positive id, negative ids …]`, ids numbering the split's distinct sentences
    (without their prompts). flag 1: a pair; 0: a row below the source's `min_score` (evaluation keeps its positive
    as a retrieval document, training drops it); 2: a distractor document (`distractors`). Metrics: retrieval of the
    positives by the anchors (`metrics.retrieval_metrics`)."""

    name, default_column = "contrastive", None  # no column needed: the targets come from the row's texts
    shown = (
        "recall@1",
        "recall@10",
        "mrr@10",
        "ndcg@10",
        "queries",
        "documents",
        "distractors_recall@1",
        "distractors_recall@10",
        "distractors_mrr@10",
        "distractors_ndcg@10",
        "distractors_documents",
    )

    options = {
        "negative_columns": DataOption(
            check_column_list("negative_columns"),
            "columns of hard negatives (one text each, every row filled)",
            shapes_rows=True,
        ),
        "min_score": DataOption(
            check_number("min_score", "on the score column's scale"),
            "rows whose score (label_column, default `score`) is below it are not pairs: training drops them, "
            "evaluation keeps their second text as a retrieval document",
            shapes_rows=True,
        ),
        "distractors": DataOption(
            _check_distractors,
            "more documents for the evaluation's second, harder corpus: {stsb: folder} (every sentence of its "
            "train split) or {file: path, columns: [...]}",
            shapes_rows=True,
        ),
        "hard_negatives": DataOption(
            check_hard_negatives,
            "mine hard negatives for the training rows (sentence-transformers' mine_hard_negatives settings: "
            "num_negatives, range_min, range_max, max_score, min_score, absolute_margin, relative_margin, "
            "sampling_strategy; and miner, corpus)",
            shapes_rows=True,
        ),
    }

    def check_data(self, member, where):
        mined = member.options.get("hard_negatives") is not None
        if mined and member.options.get("negative_columns"):
            raise ValueError(
                f"{where}: hard_negatives mines the negatives that negative_columns would read from the table; "
                "use one of them."
            )
        if mined and member.data.streamed:
            raise ValueError(
                f"{where}: hard_negatives ranks every training row's candidates over the whole table; a stream has "
                "no whole table. Give it a file without streaming."
            )
        if member.data.streamed:
            raise ValueError(
                f"{where}: a {member.spec.type} task numbers the distinct texts of its whole table and keeps "
                "repeats out of a batch; a stream has no whole table. Give it a file without streaming."
            )
        if member.data.max_samples is not None:
            raise ValueError(
                f"{where}: max_samples would cut pairs that share a text apart (a subset keeps whole groups "
                "of near-duplicates, not rows); give a smaller file instead."
            )

    def column(self, member):
        return member.data.label_column or ("score" if member.options.get("min_score") is not None else None)

    def present(self, member, column_names):
        pair = member.data.text_pair_column or DEFAULT_TEXT_PAIR_COLUMN
        return super().present(member, column_names) or pair in column_names

    def check_columns(self, member, column_names, tasks, where):
        if member.options.get("min_score") is not None or member.data.label_column is not None:
            super().check_columns(member, column_names, tasks, where)

    def negative_columns(self, member):
        return list(member.options.get("negative_columns") or [])

    def documents(self, member, readers):
        given = member.options.get("distractors")
        return self._texts(given, member, readers, "distractors") if given else []

    def mining(self, member, readers):
        given = member.options.get("hard_negatives")
        if given is None:
            return None
        settings = mining_settings(given)
        corpus = self._texts(settings.corpus, member, readers, "hard_negatives corpus") if settings.corpus else []
        return MiningRequest(settings, corpus)

    def with_negatives(self, member, targets, texts):
        # The table's numbering, continued: a mined negative that is a row's text has that text's id (the loss and the
        # no-duplicates batches compare ids), a new text the next free one.
        ids = {}
        for row, (anchor, positive) in zip(targets, zip(texts["text"], texts["text_pair"])):
            ids.setdefault(anchor, row[1])
            ids.setdefault(positive, row[2])
        free = max((max(row[1:]) for row in targets), default=-1) + 1
        out = []
        for row, negatives in zip(targets, texts["negatives"]):
            found = []
            for text in negatives:
                if text not in ids:
                    ids[text] = free
                    free += 1
                found.append(ids[text])
            out.append([*row[:3], *found])
        return out

    def _texts(self, given, member, readers, what):
        """The texts of a `{stsb: folder}` or `{file: path, columns: [...]}` setting (distractors, a mining corpus)."""
        if "stsb" in given:
            return readers.stsb_texts(given["stsb"])
        table, path, data = readers.table(given["file"]), given["file"], member.data
        defaults = list(
            dict.fromkeys(
                [
                    data.text_column or "sentence1",
                    "sentence",
                    data.text_pair_column or DEFAULT_TEXT_PAIR_COLUMN,
                    *self.negative_columns(member),
                ]
            )
        )
        columns = given.get("columns") or [c for c in defaults if c in table.column_names]
        missing = [c for c in columns if c not in table.column_names]
        if missing or not columns:
            raise ValueError(
                f"{what} {path}: no column {missing or defaults} (columns: {table.column_names}); name "
                f"them with {what}: {{file: ..., columns: [...]}}."
            )
        texts = [str(t) for column in columns for t in table[column] if t is not None and str(t).strip()]
        if not texts:
            raise ValueError(f"{what} {path}: no text in columns {columns}.")
        return texts

    def numbers_texts(self, spec):
        return True

    def training_rows(self, member, read_targets, where):
        threshold = member.options.get("min_score")
        if threshold is None:
            return None
        keep = self.labelled(read_targets())  # rows below it are not pairs: nothing to train on
        if not keep.any():
            raise ValueError(f"{where}: no training row has a score >= min_score {threshold}.")
        return keep

    def targets(self, member, texts, values, where):
        ids: dict[str, int] = texts.get("ids", {})  # given: the numbering continues across a table's batches
        number = lambda text: ids.setdefault(text, len(ids))  # noqa: E731
        negatives, threshold, out = texts.get("negatives"), member.options.get("min_score"), []
        for row, (anchor, positive) in enumerate(zip(texts["text"], texts["text_pair"])):
            if row >= texts["rows"]:
                flag = 2
            elif threshold is None:
                flag = 1
            else:
                value = values[row]
                if is_absent(value) or as_number(value) is None:
                    raise ValueError(
                        f"{where(row)}: {value!r} is not a score, and min_score {threshold} needs one on every row."
                    )
                flag = int(as_number(value) >= threshold)
            out.append([flag, number(anchor), number(positive), *map(number, negatives[row] if negatives else ())])
        return out

    def labelled(self, targets):
        return np.asarray(targets)[:, 0] == 1

    def batch_keys(self, spec, read_targets):
        return [tuple(row[1:]) for row in read_targets()]  # a text twice in a batch would be a false negative

    def metrics(self, spec, outputs, targets, domains=None, domain_names=()):
        outputs, ids = np.asarray(outputs, np.float32), np.asarray(targets)
        flag, texts = ids[:, 0], ids[:, 1:]
        # An id is a sentence; its vector depends on the role's prompt (a query's, a document's). So one vector per
        # sentence and role: a query's from the anchors, a document's from the positives, then the negatives (whose
        # prompt may differ), each its first occurrence.
        queries_of = self._first_vectors(texts[:, :1], outputs[:, :1])
        vectors = self._first_vectors(texts[:, 1:], outputs[:, 1:])
        query_ids, relevant = [], {}
        for anchor, positive in ids[flag == 1][:, 1:3].tolist():  # a query asked twice is one query: its positives
            if anchor not in relevant:
                query_ids.append(anchor)
            relevant.setdefault(anchor, set()).add(positive)
        corpus = np.unique(texts[(flag == 0) | (flag == 1)][:, 1:]).tolist()
        out = {"queries": len(query_ids), "documents": len(corpus)}
        if not query_ids:
            return out
        queries = np.stack([queries_of[q] for q in query_ids])
        in_corpus = set(corpus)
        distractors = [d for d in np.unique(texts[flag == 2][:, 1]).tolist() if d not in in_corpus]
        for prefix, documents in (("", corpus), ("distractors_", corpus + distractors)):
            if prefix and not distractors:
                break
            position = {doc: i for i, doc in enumerate(documents)}
            wanted = [{position[d] for d in relevant[q]} for q in query_ids]
            scores = m.retrieval_metrics(queries, np.stack([vectors[d] for d in documents]), wanted)
            out.update({f"{prefix}{name}": value for name, value in scores.items()})
            if prefix:
                out["distractors_documents"] = len(documents)
        return out

    @staticmethod
    def _first_vectors(ids, outputs) -> dict:
        """{id: vector} from `ids` `[rows, columns]` and their `outputs` `[rows, columns, size]`: each id's first
        occurrence, column by column."""
        unique, first = np.unique(ids.T.reshape(-1), return_index=True)
        return dict(zip(unique.tolist(), outputs.transpose(1, 0, 2).reshape(-1, outputs.shape[-1])[first]))

    def describe(self, spec):
        scale = spec.scale if spec.scale is not None else DEFAULT_SCALE
        return f"retrieval pairs with in-batch negatives; {spec.loss}, scale {scale:g}"
