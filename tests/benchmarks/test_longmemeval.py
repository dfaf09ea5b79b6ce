"""LongMemEval loader, metrics (checked against hand computations) and runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.longmemeval import (
    evaluate,
    main,
    parse_date,
    read_longmemeval,
    score_question,
    session_ranking,
)
from nuonuo_core import HashingEmbedder, InvalidInputError

# Two answerable questions and one abstention question, in the official shape.
RECORDS = [
    {
        "question_id": "q1",
        "question_type": "multi-session",
        "question": "I adopted a cat named Miso",
        "answer": "Miso eats tuna",
        "question_date": "2023/05/30 (Tue) 23:40",
        "haystack_session_ids": ["s_a", "s_b", "s_c"],
        "haystack_dates": ["2023/05/20 (Sat) 02:21", "2023/05/21 (Sun) 10:00", "2023/05/22 (Mon) 09:15"],
        "haystack_sessions": [
            [
                {"role": "user", "content": "I adopted a cat named Miso.", "has_answer": True},
                {"role": "assistant", "content": "Lovely name for a kitten!"},
            ],
            [
                {"role": "user", "content": "My sister lives in Porto."},
                {"role": "assistant", "content": "Porto is a beautiful city by the river."},
            ],
            [
                {"role": "assistant", "content": "How is your week going?"},
                {"role": "user", "content": "Miso eats tuna every evening.", "has_answer": True},
            ],
        ],
        "answer_session_ids": ["s_a", "s_c"],
    },
    {
        "question_id": "q2",
        "question_type": "single-session-user",
        "question": "bicycle commute to the office by the harbour",
        "answer": "by bicycle",
        "question_date": "2023/06/02 (Fri) 08:00",
        "haystack_session_ids": ["s_d", "s_e"],
        "haystack_dates": ["2023/06/01 (Thu) 12:00", "2023/06/01 (Thu) 18:30"],
        "haystack_sessions": [
            [
                {"role": "user", "content": "Can you suggest a pasta recipe?"},
                {"role": "assistant", "content": "Try spaghetti with garlic and olive oil."},
            ],
            [
                {"role": "user", "content": "I need new tyres."},
                {"role": "user", "content": "I commute by bicycle to the office by the harbour.", "has_answer": True},
            ],
        ],
        "answer_session_ids": ["s_e"],
    },
    {
        "question_id": "q3_abs",
        "question_type": "single-session-user",
        "question": "What is the name of my dog?",
        "answer": "The user never mentioned a dog.",
        "question_date": "2023/06/03 (Sat) 09:00",
        "haystack_session_ids": ["s_f"],
        "haystack_dates": ["2023/06/02 (Fri) 10:00"],
        "haystack_sessions": [
            [{"role": "user", "content": "I adopted a cat named Miso.", "has_answer": True}],
        ],
        "answer_session_ids": ["s_f"],
    },
]

# Rankings chosen by hand. q3_abs gets a perfect ranking that must not count.
RANKINGS = {
    "q1": ["s_b:0", "s_a:0", "s_b:1", "s_c:0", "s_c:1", "s_a:1"],
    "q2": ["s_e:0", "s_d:0", "s_e:1", "s_d:1"],
    "q3_abs": ["s_f:0"],
}

# Hand computation.
#
# q1. Relevant sessions {s_a, s_c}; relevant turns {s_a:0, s_c:1}.
#   Session ranking (best turn of each session): s_b, s_a, s_c.
#     recall_any: @1 top [s_b] -> 0; @3, @5, @10 -> 1.
#     recall_all: @1 -> 0; @3, @5, @10 -> 1 (both within the first 3).
#     ndcg: IDCG@1 = 1; IDCG@k>=2 = 1 + 1/log2(3) = 1.630930.
#       @1: DCG 0 -> 0.
#       @3, @5, @10: DCG = 1/log2(3) + 1/log2(4) = 0.630930 + 0.5 = 1.130930
#                    -> 1.130930 / 1.630930 = 0.693426.
#   Turn ranking: s_a:0 at rank 2, s_c:1 at rank 5.
#     recall_any: @1 -> 0; @3, @5, @10 -> 1.
#     recall_all: @1, @3 -> 0; @5, @10 -> 1.
#     ndcg: @1 -> 0.
#       @3: DCG = 1/log2(3) = 0.630930 -> 0.630930 / 1.630930 = 0.386853.
#       @5, @10: DCG = 1/log2(3) + 1/log2(6) = 0.630930 + 0.386853 = 1.017783
#                -> 1.017783 / 1.630930 = 0.624051.
#
# q2. Relevant sessions {s_e}; relevant turns {s_e:1}.
#   Session ranking: s_e, s_d.
#     recall_any = recall_all = 1 at every k; ndcg = 1/1 = 1 at every k.
#   Turn ranking: s_e:1 at rank 3.
#     recall_any = recall_all: @1 -> 0; @3, @5, @10 -> 1.
#     ndcg (IDCG = 1): @1 -> 0; @3, @5, @10 -> 1/log2(4) = 0.5.
#
# Means over q1 and q2 (q3_abs left out):
#   session recall_any: @1 (0 + 1)/2 = 0.5; @3, @5, @10: 1.
#   session recall_all: @1 0.5; @3, @5, @10: 1.
#   session ndcg: @1 (0 + 1)/2 = 0.5; @3, @5, @10: (0.693426 + 1)/2 = 0.846713.
#   turn recall_any: @1 0; @3, @5, @10: 1.
#   turn recall_all: @1 0; @3 (0 + 1)/2 = 0.5; @5, @10: 1.
#   turn ndcg: @1 0; @3 (0.386853 + 0.5)/2 = 0.443426;
#              @5, @10 (0.624051 + 0.5)/2 = 0.562025.
LOG3 = 1 / math.log2(3)
LOG4 = 1 / math.log2(4)
LOG6 = 1 / math.log2(6)
IDCG2 = 1 + LOG3
Q1_SESSION_NDCG3 = (LOG3 + LOG4) / IDCG2
Q1_TURN_NDCG3 = LOG3 / IDCG2
Q1_TURN_NDCG5 = (LOG3 + LOG6) / IDCG2

EXPECTED = {
    "session/recall_any@1": 0.5,
    "session/recall_any@3": 1.0,
    "session/recall_any@5": 1.0,
    "session/recall_any@10": 1.0,
    "session/recall_all@1": 0.5,
    "session/recall_all@3": 1.0,
    "session/recall_all@5": 1.0,
    "session/recall_all@10": 1.0,
    "session/ndcg@1": 0.5,
    "session/ndcg@3": (Q1_SESSION_NDCG3 + 1.0) / 2,
    "session/ndcg@5": (Q1_SESSION_NDCG3 + 1.0) / 2,
    "session/ndcg@10": (Q1_SESSION_NDCG3 + 1.0) / 2,
    "turn/recall_any@1": 0.0,
    "turn/recall_any@3": 1.0,
    "turn/recall_any@5": 1.0,
    "turn/recall_any@10": 1.0,
    "turn/recall_all@1": 0.0,
    "turn/recall_all@3": 0.5,
    "turn/recall_all@5": 1.0,
    "turn/recall_all@10": 1.0,
    "turn/ndcg@1": 0.0,
    "turn/ndcg@3": (Q1_TURN_NDCG3 + LOG4) / 2,
    "turn/ndcg@5": (Q1_TURN_NDCG5 + LOG4) / 2,
    "turn/ndcg@10": (Q1_TURN_NDCG5 + LOG4) / 2,
}


@pytest.fixture
def longmemeval_file(tmp_path: Path) -> Path:
    path = tmp_path / "longmemeval_small.json"
    path.write_text(json.dumps(RECORDS), encoding="utf-8")
    return path


def test_hand_computed_constants():
    # The decimals written in the comments above.
    assert Q1_SESSION_NDCG3 == pytest.approx(0.693426, abs=1e-6)
    assert Q1_TURN_NDCG3 == pytest.approx(0.386853, abs=1e-6)
    assert Q1_TURN_NDCG5 == pytest.approx(0.624051, abs=1e-6)


def test_reader_parses_records(longmemeval_file):
    questions = read_longmemeval(longmemeval_file)
    assert [q.question_id for q in questions] == ["q1", "q2", "q3_abs"]
    assert [q.is_abstention for q in questions] == [False, False, True]
    assert questions[0].evidence_turn_ids == ("s_a:0", "s_c:1")
    assert questions[1].evidence_turn_ids == ("s_e:1",)
    assert questions[0].answer_session_ids == ("s_a", "s_c")
    assert [s.id for s in questions[0].sessions] == ["s_a", "s_b", "s_c"]


def test_documents_one_per_turn(longmemeval_file):
    question = read_longmemeval(longmemeval_file)[0]
    documents = question.documents()
    assert [d.id for d in documents] == ["s_a:0", "s_a:1", "s_b:0", "s_b:1", "s_c:0", "s_c:1"]
    assert documents[0].text == "user: I adopted a cat named Miso."
    assert documents[0].session == "s_a"
    assert documents[0].timestamp == parse_date("2023/05/20 (Sat) 02:21")


def test_parse_date():
    assert parse_date("2023/05/20 (Sat) 02:21") == 1684549260.0
    assert parse_date("not a date") is None
    assert parse_date(None) is None


def test_session_ranking_keeps_first_turn_order():
    assert session_ranking(RANKINGS["q1"]) == ["s_b", "s_a", "s_c"]
    assert session_ranking(["a:b:3", "c:0", "a:b:1"]) == ["a:b", "c"]


def test_evaluate_matches_hand_computation(longmemeval_file):
    questions = read_longmemeval(longmemeval_file)
    result = evaluate(questions, RANKINGS)
    assert set(result.means) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        assert result.means[key] == pytest.approx(expected, abs=1e-9), key


def test_evaluate_leaves_out_abstention(longmemeval_file):
    questions = read_longmemeval(longmemeval_file)
    result = evaluate(questions, RANKINGS)
    assert result.skipped_abstention == 1
    assert result.counts == {"session": 2, "turn": 2}
    # Without the abstention question's ranking the result is the same.
    without = evaluate(questions, {k: v for k, v in RANKINGS.items() if k != "q3_abs"})
    assert without.means == result.means


def test_evaluate_by_question_type(longmemeval_file):
    result = evaluate(read_longmemeval(longmemeval_file), RANKINGS)
    assert result.by_type["multi-session"]["turn/ndcg@3"] == pytest.approx(Q1_TURN_NDCG3)
    assert result.by_type["single-session-user"]["turn/ndcg@3"] == pytest.approx(LOG4)


def test_evaluate_requires_every_ranking(longmemeval_file):
    with pytest.raises(KeyError, match="q2"):
        evaluate(read_longmemeval(longmemeval_file), {"q1": RANKINGS["q1"]})


def test_no_evidence_turns_no_turn_metrics(longmemeval_file):
    record = dict(RECORDS[1], question_id="q4")
    record["haystack_sessions"] = [
        [dict(turn, has_answer=False) for turn in session] for session in RECORDS[1]["haystack_sessions"]
    ]
    longmemeval_file.write_text(json.dumps([record]), encoding="utf-8")
    question = read_longmemeval(longmemeval_file)[0]
    scores = score_question(question, RANKINGS["q2"])
    assert scores["session/recall_any@1"] == 1.0
    assert not any(key.startswith("turn/") for key in scores)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([{"question_id": "q"}], "missing fields"),
        ({"question_id": "q"}, "expected a JSON list"),
        ([dict(RECORDS[0], haystack_dates=["2023/05/20 (Sat) 02:21"])], "differ in length"),
        ([dict(RECORDS[0], haystack_sessions=[[{"role": "user"}], [], []])], "string 'content'"),
        ([42], "expected an object"),
    ],
)
def test_reader_rejects_bad_records(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(InvalidInputError, match=message):
        read_longmemeval(path)


def test_reader_rejects_missing_file(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_longmemeval(tmp_path / "absent.json")


def test_runner_evaluates_every_system(longmemeval_file, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        ["--file", str(longmemeval_file), "--out", str(out), "--depth", "10",
         "--systems", "flat", "bm25", "fusion", "nuonuo", "nuonuo-2hop"],
        embedder=HashingEmbedder(),
    )
    assert status == 0
    results = json.loads((out / "results.json").read_text())["results"]
    assert set(results) == {"flat cosine", "BM25", "RRF(flat, BM25)", "NuoNuo default", "NuoNuo hops=2"}
    for name, result in results.items():
        assert result["abstention_left_out"] == 1, name
        assert result["counts"] == {"session": 2, "turn": 2}, name
    # Each question repeats its evidence turn's words, so the bag-of-words
    # embedder and BM25 put that turn first.
    for name in ("flat cosine", "BM25", "NuoNuo default"):
        assert results[name]["means"]["turn/recall_any@1"] == 1.0, name
    # Ten turns cover every turn of these haystacks.
    assert results["flat cosine"]["means"]["turn/recall_all@10"] == 1.0
    assert "session level, 2 questions" in capsys.readouterr().out
    assert (out / "report.md").exists()
