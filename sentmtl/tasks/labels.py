"""Label names and cell values: the one rule that maps a value to a class id (`LabelMap`), for classification,
multilabel and `--class_names` alike, and what counts as an empty cell."""

import math


class LabelMap:
    """Values → class ids, by one documented rule:

    1. a value matches a label name exactly (both trimmed);
    2. else it matches one name case-insensitively, where only one does;
    3. else a number matches the one name that is the same number (names "0.5" … "2.5": the value 2.0 is "2.0";
       names "1" … "5": the value 1 is the class *named* "1");
    4. else an integer value (1, "1", 1.0) is a class id 0 … K−1, but only when no label name is a number;
    5. anything else is an error naming the place, the value and the names.
    An empty cell, None or NaN means "no target on this row" (`None` is returned). A `ClassLabel` column is read by
    its names through rules 1–3 (`sentmtl.data.columns.table_columns`), so a dataset's own class order cannot swap classes.
    """

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.exact = {name: i for i, name in enumerate(self.names)}
        folded: dict[str, list[int]] = {}
        numbers: dict[float, list[int]] = {}
        for i, name in enumerate(self.names):
            folded.setdefault(name.casefold(), []).append(i)
            if as_number(name) is not None:
                numbers.setdefault(as_number(name), []).append(i)
        self.folded, self.numbers = folded, numbers
        self.ids_allowed = not numbers

    def __call__(self, value, where: str) -> int | None:
        shown = value
        value = value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value  # numpy
        if is_absent(value):
            return None
        if isinstance(value, bool):
            value = str(value).lower()  # True is not the id 1: it matches a name "true" or nothing
        text = as_text(value)
        named = self.by_name(text, where, shown)
        if named is not None:
            return named
        number = as_integer(text)
        if number is not None and self.ids_allowed and 0 <= number < len(self.names):
            return number
        ids = f" or a class id 0–{len(self.names) - 1}" if self.ids_allowed else " (numbers are names here, not ids)"
        raise ValueError(f"{where}: label {shown!r} is not one of the names {self.names}{ids}.")

    def by_name(self, text: str, where: str, shown=None) -> int | None:
        """Rules 1–3 alone: the class id `text` names, or None when it names none (an ambiguous match is an error)."""
        text = as_text(text)
        if text in self.exact:
            return self.exact[text]
        matches = self.folded.get(text.casefold(), []) or self.numbers.get(as_number(text), [])
        if len(matches) > 1:
            raise ValueError(
                f"{where}: label {text if shown is None else shown!r} matches {[self.names[i] for i in matches]} when "
                "case (or the way a number is written) is ignored; write it exactly as one of them."
            )
        return matches[0] if matches else None


def metric_label(name: str) -> str:
    """A label name as it appears in a metric's key (`f1_positive`): characters other than letters, digits, `-`
    and `.` become `_`."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in str(name).strip())


def is_absent(value) -> bool:
    value = value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes, list)) else value
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def as_text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a CSV column with an empty cell is read as floats: 1.0 is the label "1"
    return str(value).strip()


def as_number(text) -> float | None:
    try:
        number = float(str(text).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def as_integer(text: str) -> int | None:
    text = str(text).strip()
    return int(text) if text.lstrip("+-").isdigit() else None


__all__ = ["LabelMap", "as_integer", "as_number", "as_text", "is_absent", "metric_label"]
