"""sentmtl/data/split.py: the leak-free split: near-duplicates, pairs (by both sentences) and rows that name each
other stay on one side; stratified, seeded, bounded by max_samples."""

from collections import Counter

import datasets
import pytest
from helpers import synthetic_rows

from sentmtl.data.corpus import load_sentiment_corpus
from sentmtl.data.split import near_duplicate_key, train_test_split


def test_split_cannot_leak_and_is_stratified(corpus):
    split = train_test_split(corpus, test_size=0.2, seed=0)
    train, test = split["train"], split["test"]
    assert train.num_rows + test.num_rows == 3000
    assert not set(train["sentence"]) & set(test["sentence"])
    n_unique_test = len(set(test["sentence"]))
    assert abs(n_unique_test - round(2982 * 0.2)) <= 1
    # Label proportions within one example of exact stratification (over distinct sentences).
    positives = len({s for s, label in zip(test["sentence"], test["label"]) if label == 1})
    unique_positive_share = len({s for s, label in zip(corpus["sentence"], corpus["label"]) if label == 1}) / 2982
    assert abs(positives - n_unique_test * unique_positive_share) <= 1
    per_source = Counter(test["source"])
    assert max(per_source.values()) - min(per_source.values()) <= 3


def test_split_is_seeded(corpus):
    a = list(train_test_split(corpus, seed=1)["test"]["sentence"])
    assert list(train_test_split(corpus, seed=1)["test"]["sentence"]) == a
    assert list(train_test_split(corpus, seed=2)["test"]["sentence"]) != a


def test_max_samples_takes_a_stratified_subset(corpus):
    split = train_test_split(corpus, max_samples=1000, seed=0)
    labels = list(split["train"]["label"]) + list(split["test"]["label"])
    assert Counter(labels) == {0: 500, 1: 500}
    assert (split["train"].num_rows, split["test"].num_rows) == (800, 200)
    assert Counter(split["test"]["label"]) == {0: 100, 1: 100}


@pytest.mark.parametrize(
    "kwargs, message", [({"test_size": 1.0}, "test_size=1.0"), ({"max_samples": 5000}, "max_samples=5000")]
)
def test_split_rejects_bad_arguments(corpus, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_test_split(corpus, **kwargs)


def test_split_keeps_near_duplicates_on_one_side():
    """The split grouped identical strings only: `Great phone.` and `Great Phone.` (one input to an uncased
    tokenizer) could land on both sides."""
    assert near_duplicate_key("Great phone!.") == near_duplicate_key("great  PHONE.") == "great phone"
    assert near_duplicate_key("Great phone") != near_duplicate_key("Great phones")
    variants = ["Great phone.", "Great Phone.", "Great phone!.", "great phone", "GREAT PHONE!!"]
    rows = synthetic_rows(40)
    sentences = rows["sentence"] + variants * 2
    labels = rows["label"] + [1] * len(variants) * 2
    dataset = datasets.Dataset.from_dict({"sentence": sentences, "label": labels})
    for seed in range(10):
        split = train_test_split(dataset, 0.3, seed)
        sides = [{near_duplicate_key(s) for s in split[side]["sentence"]} for side in ("train", "test")]
        assert not sides[0] & sides[1]
        assert split["train"].num_rows + split["test"].num_rows == len(sentences)


def test_real_corpus_has_2972_near_duplicate_groups_and_none_straddle(data_dir):
    corpus = load_sentiment_corpus(data_dir)
    assert len({near_duplicate_key(s) for s in corpus["sentence"]}) == 2972
    split = train_test_split(corpus, 0.2, 42)
    train, test = ({near_duplicate_key(s) for s in split[side]["sentence"]} for side in ("train", "test"))
    assert not train & test and len(train) + len(test) == 2972


def test_pairs_are_split_by_both_sentences():
    """Issue #20, open point: a second sentence that is another pair's first (or second) sentence keeps both pairs on
    one side."""
    first = [f"sentence {i}" for i in range(40)]
    second = [f"other {i}" for i in range(40)]
    second[7] = first[3]  # pair 7 shares a sentence with pair 3
    second[20] = second[30]  # pairs 20 and 30 share their second sentence
    table = datasets.Dataset.from_dict({"text": first, "text_pair": second, "label": [i % 2 for i in range(40)]})
    for seed in range(10):
        split = train_test_split(table, 0.3, seed, text_column=["text", "text_pair"], label_column="label")
        test = set(split["test"]["text"])
        assert ("sentence 3" in test) == ("sentence 7" in test)
        assert ("sentence 20" in test) == ("sentence 30" in test)


def test_the_split_joins_rows_through_a_column_of_lists():
    """A hard negative that is another row's anchor joins the two rows' groups (a column of lists counts as one text
    column per position), as the add-a-column-per-negative version did."""
    from sentmtl.data.split import train_test_split

    texts = [f"sentence {i}" for i in range(20)]
    partner = [i + 1 if i % 2 == 0 else i - 1 for i in range(20)]  # rows 2k and 2k + 1 name each other
    table = datasets.Dataset.from_dict(
        {"text": texts, "negatives": [[texts[p], f"other {i}"] for i, p in enumerate(partner)]}
    )
    for seed in range(5):
        split = train_test_split(table, 0.3, seed, text_column=["text", "negatives"])
        train = {int(t.split()[1]) for t in split["train"]["text"]}
        assert all((i in train) == (partner[i] in train) for i in range(20))
        assert split["test"].num_rows == 6  # 10 groups of 2 rows, 3 held out


def test_prompted_columns_are_compared_without_their_prompts():
    """A sentence that is one pair's anchor ("query: " …) and another pair's positive ("passage: " …) is one sentence:
    both pairs stay on one side, as without prompts."""
    first = [f"query: sentence {i}" for i in range(40)]
    second = [f"passage: other {i}" for i in range(40)]
    second[7] = "passage: sentence 3"  # pair 7's positive is pair 3's anchor
    table = datasets.Dataset.from_dict({"text": first, "text_pair": second, "label": [i % 2 for i in range(40)]})
    prefixes = {"text": "query: ", "text_pair": "passage: "}
    apart = 0
    for seed in range(10):
        split = train_test_split(
            table, 0.3, seed, text_column=["text", "text_pair"], label_column="label", strip_prefixes=prefixes
        )
        test = set(split["test"]["text"])
        assert ("query: sentence 3" in test) == ("query: sentence 7" in test)
        plain = train_test_split(table, 0.3, seed, text_column=["text", "text_pair"], label_column="label")
        apart += ("query: sentence 3" in set(plain["test"]["text"])) != ("query: sentence 7" in plain["test"]["text"])
    assert apart  # compared with their prompts, the two pairs could land apart
