"""The factored association matrix against the dense outer-product reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nuonuo_core import _postings
from nuonuo_core.association import Association, _Postings
from nuonuo_core.functional import hebbian_update_
from nuonuo_core.lexical import SUBJECT_LINK_CAP

CODE_DIM = 256
K = 8


def random_codes(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.stack([np.sort(rng.choice(CODE_DIM, K, replace=False)) for _ in range(count)])


def build(seed: int, count: int = 600, links: int = 400):
    """An association filled in batches, one by one and with re-coded slots, plus its dense twin."""
    rng = np.random.default_rng(seed)
    weights = {"explicit": 1.0, "session": 0.5}
    association = Association(CODE_DIM, K, weights)
    codes = random_codes(rng, count)
    association.set_codes(np.arange(300), codes[:300])
    for slot in range(300, count):
        association.set_codes(np.array([slot]), codes[slot : slot + 1])
    recoded = random_codes(rng, 30)
    codes[:30] = recoded
    association.set_codes(np.arange(30), recoded)

    dense = torch.zeros(CODE_DIM, CODE_DIM, dtype=torch.float64)
    for _ in range(links):
        a, b = (int(x) for x in rng.integers(0, count, 2))
        if a == b:
            continue
        kind = "explicit" if rng.random() < 0.5 else "session"
        association.link(a, b, kind, 1.0)
        pre = torch.from_numpy(codes[a : a + 1]).long()
        post = torch.from_numpy(codes[b : b + 1]).long()
        hebbian_update_(dense, pre, post, weights[kind])
        hebbian_update_(dense, post, pre, weights[kind])
    return association, dense, codes, rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_factored_matrix_equals_dense(seed):
    association, dense, _, _ = build(seed)
    assert torch.equal(association.dense_matrix(), dense)


@pytest.mark.parametrize("seed", [0, 1])
def test_apply_equals_dense_product(seed):
    association, dense, _, rng = build(seed)
    for _ in range(20):
        units = rng.choice(CODE_DIM, K, replace=False)
        state = torch.zeros(CODE_DIM, dtype=torch.float64)
        state[units] = 1.0
        assert np.allclose(association.apply(units), (state @ dense).numpy())


def test_overlaps_match_dense_codes():
    association, _, codes, rng = build(3)
    dense_codes = np.zeros((codes.shape[0], CODE_DIM))
    np.put_along_axis(dense_codes, codes, 1.0, axis=1)
    for _ in range(20):
        units = rng.choice(CODE_DIM, K, replace=False)
        slots, overlap = association.overlaps(units)
        full = np.zeros(codes.shape[0])
        full[slots] = overlap
        assert np.array_equal(full, dense_codes[:, units].sum(axis=1))


def test_killed_slot_leaves_matrix_and_overlaps():
    association, _, codes, _ = build(4)
    association.kill(5)
    slots, _ = association.overlaps(codes[5])
    assert 5 not in slots.tolist()
    assert association.links_of(5) == {}
    assert all(5 not in association.links_of(s) for s in range(codes.shape[0]))


def test_complete_recalls_linked_code():
    rng = np.random.default_rng(7)
    association = Association(4096, 20, {"explicit": 1.0})
    codes = np.stack([np.sort(rng.choice(4096, 20, replace=False)) for _ in range(100)])
    association.set_codes(np.arange(100), codes)
    association.link(10, 11, "explicit", 1.0)
    assert np.array_equal(association.complete(codes[10]), codes[11])


def test_spread_follows_chain_and_blocks_path():
    association = Association(CODE_DIM, K, {"explicit": 1.0})
    association.set_codes(np.arange(4), random_codes(np.random.default_rng(0), 4))
    for a, b in ((0, 1), (1, 2), (2, 3)):
        association.link(a, b, "explicit", 1.0)
    step = association.spread({1: 1.0}, blocked={1: {0, 1}})
    assert step.slots.tolist() == [2]
    assert step.activation.tolist() == [1.0]
    assert step.predecessor.tolist() == [1]


def test_spread_by_kind_gives_each_kind_its_share():
    association = Association(CODE_DIM, K, {"explicit": 1.0, "session": 1.0})
    association.set_codes(np.arange(4), random_codes(np.random.default_rng(0), 4))
    association.link(0, 1, "explicit", 9.0)
    association.link(0, 2, "explicit", 1.0)
    association.link(0, 3, "session", 1.0)
    step = association.spread({0: 1.0})
    pooled = dict(zip(step.slots.tolist(), step.activation.tolist()))
    assert pooled == pytest.approx({1: 9 / 11, 2: 1 / 11, 3: 1 / 11})
    step = association.spread({0: 1.0}, by_kind=True)
    by_kind = dict(zip(step.slots.tolist(), step.activation.tolist()))
    assert by_kind == pytest.approx({1: 0.45, 2: 0.05, 3: 0.5})
    assert association.neighbours_by_kind(0) == {"explicit": {1: 9.0, 2: 1.0}, "session": {3: 1.0}}


def test_volatile_kind_rederived_in_query_context():
    association = Association(CODE_DIM, K, {"entity": 1.0})
    association.set_codes(np.arange(3), random_codes(np.random.default_rng(0), 3))
    targets = {"now": 1}
    association.derived["entity"] = lambda slot: {targets["now"]: 1.0} if slot == 0 else {}
    association.volatile.add("entity")
    assert association.neighbours_by_kind(0) == {"entity": {1: 1.0}}
    targets["now"] = 2
    # Outside a context the cached links stand; inside, the kind is derived anew.
    assert association.neighbours_by_kind(0) == {"entity": {1: 1.0}}
    with association.query_context():
        assert association.neighbours_by_kind(0) == {"entity": {2: 1.0}}
        assert association.neighbours(0) == {2: 1.0}
    assert association.neighbours_by_kind(0) == {"entity": {1: 1.0}}
    # Slots the query does not affect keep their cached links inside a context.
    with association.query_context(lambda slot: slot != 0):
        assert association.neighbours_by_kind(0) == {"entity": {1: 1.0}}


def test_entity_neighbours_skip_names():
    from nuonuo_core.lexical import EntityIndex

    index = EntityIndex()
    index.add(0, {"alpha corp", "bob stone"})
    index.add(1, {"alpha corp"})
    index.add(2, {"paris"}, subject="bob stone")
    assert set(index.neighbours(0, max_df=2)) == {1, 2}
    # A skipped name links nothing, as a shared name or as a subject.
    assert set(index.neighbours(0, max_df=2, skip={"alpha corp"})) == {2}
    assert set(index.neighbours(0, max_df=2, skip={"bob stone"})) == {1}
    assert index.neighbours(2, max_df=2, skip={"bob stone"}) == {}


def test_common_noun_links_nothing_as_a_name():
    from nuonuo_core.lexical import EntityIndex
    from nuonuo_core.text import entity_phrases, plain_words

    texts = [
        "The Tikhaya Sosna flows through Belgorod Oblast.",
        "Priozersky District lies in Leningrad Oblast.",
        "Stary Oskol is a city of Belgorod Oblast.",
        "An oblast is a region of Russia.",
    ]
    index = EntityIndex()
    for slot, text in enumerate(texts[:3]):
        index.add(slot, entity_phrases(text), plain=plain_words(text))
    assert set(index.neighbours(1, max_df=3)) == {0, 2}
    # Once a memory writes "oblast" in lower case, the capitalised word is a
    # common noun and links nothing. The longer name still links.
    index.add(3, entity_phrases(texts[3]), plain=plain_words(texts[3]))
    assert index.is_common_noun("oblast", 3)
    assert index.neighbours(1, max_df=3) == {}
    assert set(index.neighbours(0, max_df=3)) == {2}
    index.remove(3, plain_words(texts[3]))
    assert not index.is_common_noun("oblast", 3)
    assert set(index.neighbours(1, max_df=3)) == {0, 2}


def test_plain_words_are_lower_case_words_only():
    from nuonuo_core.text import plain_words

    assert plain_words("The River Thames is a river in England.") == {"river"}
    assert plain_words("Ask Mom's friend about self-care.") == {"friend", "self-care"}


@pytest.mark.parametrize("compiled", [True, False])
def test_postings_list_slots_unit_by_unit(monkeypatch, compiled):
    if compiled and not _postings.AVAILABLE:
        pytest.skip("Numba is not installed, so there is no compiled grouping")
    monkeypatch.setattr(_postings, "AVAILABLE", compiled)
    rng = np.random.default_rng(0)
    units = rng.integers(0, 300, (1000, 5)).astype(np.uint16)
    slots = rng.permutation(1000)
    postings = _Postings(units, slots, 300, segment_id=0)
    flat = units.reshape(-1)
    expected = np.repeat(slots, 5)[np.argsort(flat, kind="stable")]
    assert postings.slots.tolist() == expected.tolist()
    assert postings.pointers.tolist() == [0] + np.cumsum(np.bincount(flat, minlength=300)).tolist()


def test_subjects_named_by_query_words():
    from nuonuo_core.lexical import EntityIndex
    from nuonuo_core.text import lexical_terms

    index = EntityIndex()
    index.add(0, set(), subject="melanie")
    index.add(1, set(), subject="west chicago")
    index.add(2, set(), subject="the who")  # no content words: never named
    index.add(3, set(), subject="melanie")
    assert index.subjects_named(lexical_terms("What does Melanie like?")) == {"melanie"}
    # Every content word of the subject must be in the query.
    assert index.subjects_named(lexical_terms("Is Chicago big?")) == set()
    assert index.subjects_named(lexical_terms("Where is West Chicago?")) == {"west chicago"}
    assert index.subjects_named(lexical_terms("Who sang for The Who?")) == set()
    # A subject is forgotten once no memory is about it.
    index.remove(0)
    assert index.subjects_named(["melanie"]) == {"melanie"}
    index.remove(3)
    assert index.subjects_named(["melanie"]) == set()


@pytest.mark.parametrize("value", [-1, 1024])
def test_set_codes_rejects_units_outside_code(value):
    association = Association(1024, 8, {})
    association.set_codes(np.arange(4), np.arange(32).reshape(4, 8))
    codes = np.zeros((300, 8), dtype=np.int64)
    codes[5, 3] = value
    with pytest.raises(ValueError, match="invalid codes"):
        association.set_codes(np.arange(4, 304), codes)
    assert association.code(2).tolist() == list(range(16, 24))


def test_subject_commonness_grows():
    from nuonuo_core.lexical import EntityIndex

    index = EntityIndex()
    for slot in range(6):
        index.add(slot, set(), subject="melanie" if slot < 4 else f"title {slot}")
    index.add(6, set())  # about nothing

    def commonness(subject: str) -> float:
        return EntityIndex.commonness(index.about_count(subject), len(index))

    # Naming the subject of a single memory separates it fully, and so does an unknown one.
    assert commonness("title 4") == 0.0
    assert commonness("nobody") == 0.0
    assert 0.0 < commonness("melanie") < 1.0
    index.add(7, set(), subject="melanie")
    more = commonness("melanie")
    index.remove(7)
    assert more > commonness("melanie")


@pytest.mark.parametrize("about", [SUBJECT_LINK_CAP, SUBJECT_LINK_CAP + 1])
def test_subject_links_capped_in_large_namespace(about):
    from nuonuo_core.lexical import EntityIndex

    index = EntityIndex()
    for slot in range(about):
        index.add(slot, set(), subject="melanie")
    index.add(about, {"melanie"})
    # Unrelated memories make the namespace large enough that the cap, not the
    # share of memories, decides.
    for slot in range(about + 1, 100 * SUBJECT_LINK_CAP):
        index.add(slot, {f"name {slot}"})
    linked = set(index.neighbours(about, max_df=2))
    assert linked == (set(range(about)) if about <= SUBJECT_LINK_CAP else set())


def test_link_many_matches_link():
    pairs = [(0, 1), (1, 2), (2, 2), (1, 0), (3, 0), (2, 1)]
    one_by_one = Association(1024, 8, {"session": 1.0, "explicit": 1.0})
    batched = Association(1024, 8, {"session": 1.0, "explicit": 1.0})
    for association in (one_by_one, batched):
        association.set_codes(np.arange(4), np.arange(32).reshape(4, 8))
        # A link of another kind first, so that kinds add up on one pair.
        association.link(3, 0, "explicit", 0.5)
    for a, b in pairs:
        one_by_one.link(a, b, "session", 1.0)
    batched.link_many(pairs, "session", 1.0)
    for slot in range(4):
        assert batched.links_of(slot) == one_by_one.links_of(slot)
    assert batched.links_of(0) == {1: {"session": 2.0}, 3: {"explicit": 0.5, "session": 1.0}}
