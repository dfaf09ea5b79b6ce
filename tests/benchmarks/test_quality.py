"""The quality benchmark: systems, metrics on small corpora, and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.datasets import Document, RetrievalQuestion, RetrievalTask, load_locomo, locomo_task
from benchmarks.quality import (
    NUONUO_SYSTEMS,
    SYSTEM_CHOICES,
    NuoNuoRetriever,
    build_systems,
    evaluate_task,
    goal_summary,
    main,
    nuonuo_configs,
)
from nuonuo_core import MemoryConfig

TURNS = [
    ("Ana", "I started learning the cello last spring."),
    ("Ben", "That sounds wonderful, is it hard?"),
    ("Ana", "The bow technique is the hardest part."),
    ("Ben", "My brother repairs bicycles in Lisbon."),
    ("Ana", "Does he fix electric bikes too?"),
    ("Ben", "Yes, he opened a second workshop near the harbour."),
    ("Ana", "We adopted a grey kitten called Pebble."),
    ("Ben", "Pebble is a lovely name for a kitten."),
]


def write_data(root: Path) -> Path:
    """A LoCoMo conversation and a MuSiQue corpus in the published shapes, small enough for a test."""
    locomo = root / "locomo"
    locomo.mkdir(parents=True)
    conversation = {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [{"speaker": s, "dia_id": f"D1:{i + 1}", "text": t} for i, (s, t) in enumerate(TURNS[:4])],
        "session_2_date_time": "10:00 am on 9 May, 2023",
        "session_2": [{"speaker": s, "dia_id": f"D2:{i + 1}", "text": t} for i, (s, t) in enumerate(TURNS[4:])],
        "session_3_date_time": "11:00 am on 10 May, 2023",
        "qa": [
            {"question": "What instrument is Ana learning?", "answer": "cello", "evidence": ["D1:1"], "category": 4},
            {"question": "Where does Ben's brother repair bicycles?", "answer": "Lisbon", "evidence": ["D1:4; D2:2"], "category": 1},
            {"question": "What is the kitten called?", "answer": "Pebble", "evidence": ["D2:3"], "category": 2},
            {"question": "Unanswerable question", "answer": "", "evidence": ["D1:1"], "category": 5},
            {"question": "Malformed evidence only", "answer": "", "evidence": ["D9:99"], "category": 3},
        ],
    }
    (locomo / "conv-1.json").write_text(json.dumps(conversation), encoding="utf-8")

    musique = root / "musique"
    musique.mkdir()
    corpus = [
        {"title": "Porto", "text": "Porto is a coastal city in northwest Portugal."},
        {"title": "Porto", "text": "The Dom Luis I Bridge in Porto crosses the Douro river."},
        {"title": "Douro", "text": "The Douro is a major river of the Iberian Peninsula."},
        {"title": "Lisbon", "text": "Lisbon is the capital of Portugal."},
        {"title": "Cello", "text": "The cello is a bowed string instrument."},
    ]
    questions = [
        {
            "id": "q1", "question": "Which river does the bridge in Porto cross?", "answer": "Douro",
            "paragraphs": [
                {"title": "Porto", "paragraph_text": corpus[1]["text"], "is_supporting": True},
                {"title": "Douro", "paragraph_text": corpus[2]["text"], "is_supporting": True},
                {"title": "Lisbon", "paragraph_text": corpus[3]["text"], "is_supporting": False},
            ],
        }
    ]
    (musique / "corpus.json").write_text(json.dumps(corpus), encoding="utf-8")
    (musique / "questions.json").write_text(json.dumps(questions), encoding="utf-8")
    return root


def test_locomo_task_follows_metric_rules(tmp_path):
    task = locomo_task(write_data(tmp_path))
    # Category 5 and the question left without valid evidence are dropped.
    assert [q.question for q in task.questions] == [
        "What instrument is Ana learning?",
        "Where does Ben's brother repair bicycles?",
        "What is the kitten called?",
    ]
    assert task.questions[1].relevant == ("conv-1:D1:4", "conv-1:D2:2")
    documents = task.corpora["conv-1"]
    assert documents[0].text == "Ana: I started learning the cello last spring."
    assert documents[0].session != documents[4].session
    assert documents[0].metadata["date"] == "1:56 pm on 8 May, 2023"


def test_locomo_real_data_question_count(locomo_dir):
    _, questions = load_locomo(locomo_dir.parent)
    assert len(questions) == 951


def test_nuonuo_systems_take_configs():
    for name, system in NUONUO_SYSTEMS.items():
        assert isinstance(system.config, MemoryConfig), name
    assert set(NUONUO_SYSTEMS) <= set(SYSTEM_CHOICES)


def test_nuonuo_configs_apply_settings():
    configs = nuonuo_configs(["lexical_weight=0.5", "links.session=0"], ["flat", "nuonuo", "nuonuo-2hop"])
    assert set(configs) == {"nuonuo", "nuonuo-2hop"}
    for config in configs.values():
        assert config.lexical_weight == 0.5
        assert config.links.session == 0


def test_equal_configs_share_one_memory(hashing_embedder):
    systems = build_systems(["nuonuo", "nuonuo-1hop", "nuonuo-2hop", "flat"], hashing_embedder)
    memories = {id(s.shared) for s in systems if isinstance(s, NuoNuoRetriever)}
    assert len(memories) == 1
    assert [s.name for s in systems] == ["NuoNuo default", "NuoNuo hops=1", "NuoNuo hops=2", "flat cosine"]


def test_build_systems_rejects_unknown(hashing_embedder):
    with pytest.raises(ValueError, match="unknown systems \\['vector'\\]"):
        build_systems(["flat", "vector"], hashing_embedder)


def test_musique_recall_compares_titles(hashing_embedder):
    # Two passages share the title "Porto": the ids are indexes, the metric compares titles.
    documents = [
        Document("0", "Porto\nPorto is a coastal city."),
        Document("1", "Porto\nThe bridge in Porto crosses the Douro river."),
        Document("2", "Douro\nThe Douro river flows through Spain and Portugal."),
        Document("3", "Lisbon\nLisbon is the capital."),
    ]
    task = RetrievalTask(
        name="MuSiQue",
        corpora={"musique": documents},
        questions=[RetrievalQuestion("bridge Porto Douro river", ("Porto", "Douro"), "multi-hop", "musique")],
        ks=(1, 2),
        label_of={"0": "Porto", "1": "Porto", "2": "Douro", "3": "Lisbon"},
    )
    scores = evaluate_task(task, build_systems(["flat", "bm25"], hashing_embedder))
    for system in ("flat cosine", "BM25"):
        assert scores[system]["all@1"] == [0.5], system
        assert scores[system]["all@2"] == [1.0], system


def test_repeated_text_stands_for_every_copy(hashing_embedder):
    # The memory stores one copy of a repeated text; both document ids count as found.
    documents = [Document("a", "Thanks!"), Document("b", "The ferry leaves at seven."), Document("c", "Thanks!")]
    task = RetrievalTask(
        "tiny", {"tiny": documents},
        [RetrievalQuestion("Thanks!", ("a", "c"), "single-hop", "tiny")], ks=(2,),
    )
    scores = evaluate_task(task, build_systems(["nuonuo", "flat"], hashing_embedder))
    assert scores["NuoNuo default"]["all@2"] == [1.0]
    assert scores["flat cosine"]["all@2"] == [1.0]


@pytest.mark.slow
def test_command_writes_report(tmp_path, real_embedder, capsys):
    data = write_data(tmp_path / "data")
    out = tmp_path / "out"
    status = main(["--data", str(data), "--out", str(out), "--set", "lexical_weight=0.5", "--cache", str(tmp_path / "cache.npz")])
    assert status == 0
    printed = capsys.readouterr().out
    assert "LoCoMo recall@10" in printed
    assert "MuSiQue recall@5" in printed
    assert "Recall goals of the default configuration" in printed
    assert "below flat cosine in: no measure" in printed
    results = json.loads((out / "results.json").read_text())
    # NuoNuo rows carry a mark because --set changed their configuration.
    assert set(results["results"]["LoCoMo"]) == {
        "flat cosine", "BM25", "RRF(flat, BM25)", "NuoNuo default *", "NuoNuo hops=1 *", "NuoNuo hops=2 *",
    }
    assert results["questions"]["LoCoMo"]["all@10"] == 3
    assert results["settings"] == "lexical_weight=0.5"
    # Eight turns and five passages: the top 10 and top 5 hold everything.
    for system, values in results["results"]["LoCoMo"].items():
        assert values["all@10"] == 1.0, system
    # The question names its evidence turn's words, so flat search puts it first.
    assert results["results"]["LoCoMo"]["flat cosine"]["single-hop@5"] == 1.0
    assert (out / "quality.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "lexical_weight=0.5" in report
    assert "| flat cosine |" in report
    # Every goal is reached when the top k contains every memory.
    assert "| LoCoMo recall@10, multi-hop | 1.000 | 1.000 | 1.000 | 1.000 | 0.500 | yes |" in report
    assert (tmp_path / "cache.npz").exists()


def test_command_rejects_unknown_setting(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["--data", str(write_data(tmp_path)), "--set", "gamma=2"])
    assert raised.value.code == 2
    assert "unknown MemoryConfig field 'gamma'" in capsys.readouterr().err


def test_command_reports_missing_data(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "absent")]) == 2
    assert "benchmark data not found" in capsys.readouterr().err


def test_goal_summary_missed_goal_and_measure_below_flat():
    scores = {
        "flat cosine": {"all@2": [0.6, 0.6], "all@5": [0.7, 0.7]},
        "NuoNuo default": {"all@2": [0.5, 0.6], "all@5": [0.8, 0.8]},
    }
    lines = goal_summary({"MuSiQue": scores}).splitlines()
    assert lines[3].split() == ["MuSiQue", "recall@2", "0.600", "n/a", "n/a", "0.550", "0.580", "NO"]
    assert lines[4].split() == ["MuSiQue", "recall@5", "0.700", "n/a", "n/a", "0.800", "0.750", "yes"]
    assert lines[-1] == "NuoNuo default below flat cosine in: MuSiQue all@2"
    assert goal_summary({"MuSiQue": {"flat cosine": scores["flat cosine"]}}) == ""
