"""The ``nuonuo`` command line: ingest and recall on real files, and its errors."""

from __future__ import annotations

import json

import pytest

from nuonuo_core import AssociativeMemory
from nuonuo_core.cli import main

CONVERSATION = {
    "speaker_a": "Ana",
    "speaker_b": "Ben",
    "session_1_date_time": "1:56 pm on 8 May, 2023",
    "session_1": [
        {"speaker": "Ana", "dia_id": "D1:1", "text": "I planted tomatoes on the balcony."},
        {"speaker": "Ben", "dia_id": "D1:2", "text": "Nice, which variety did you pick?"},
        {"speaker": "Ana", "dia_id": "D1:3", "text": "Cherry tomatoes, they ripen early."},
    ],
}


@pytest.fixture
def conversation_file(tmp_path):
    path = tmp_path / "garden.json"
    path.write_text(json.dumps(CONVERSATION), encoding="utf-8")
    return path


def test_ingest_same_conversation_twice(tmp_path, conversation_file, capsys):
    memory_file = tmp_path / "memory.db"

    first = main(["ingest", str(conversation_file), "--memory", str(memory_file), "--quiet"])
    second = main(["ingest", str(conversation_file), "--memory", str(memory_file), "--quiet"])

    assert first == 0
    assert second == 0
    assert "Stored 0 new memories" in capsys.readouterr().out
    with AssociativeMemory(memory_file) as memory:
        assert len(memory) == 3


def test_ingest_json_array(tmp_path, capsys):
    corpus = tmp_path / "corpus.json"
    passages = [{"title": "Tomato", "text": "The tomato is a berry."}, {"title": "Basil", "text": "Basil likes sun."}]
    corpus.write_text(json.dumps(passages), encoding="utf-8")
    memory_file = tmp_path / "memory.db"

    status = main(["ingest", str(corpus), "--memory", str(memory_file), "--quiet"])

    assert status == 0
    with AssociativeMemory(memory_file) as memory:
        records = memory.list(())
        assert sorted(r.text for r in records) == ["Basil likes sun.", "The tomato is a berry."]
        assert sorted(r.metadata["title"] for r in records) == ["Basil", "Tomato"]


@pytest.mark.parametrize(
    ("name", "content", "extra", "expected"),
    [
        ("binary.txt", b"\xc0\xff\x00 not text", [], "is not UTF-8 text"),
        ("notes.txt", b"just some notes", ["--format", "locomo"], "is not valid JSON"),
        ("broken.json", b'{"speaker_a": "Ana", ', [], "is not valid JSON"),
        ("numbers.json", b"[1, 2]", [], "expected an object with a string 'text', got int"),
        ("list_metadata.jsonl", b'{"text": "hello", "metadata": [1, 2]}\n', [], "metadata must be a mapping, got list"),
        ("no_text.jsonl", b'{"title": "hello"}\n', [], "got an object without one"),
        ("number_text.jsonl", b'{"text": 5}\n', [], "expected a string 'text', got int 5"),
        ("empty.json", b"", [], "contains no memories"),
        ("blank.txt", b"\n\n  \n", [], "contains no memories"),
        ("empty_array.json", b"[]", [], "contains no memories"),
    ],
)
def test_ingest_bad_file(tmp_path, capsys, name, content, extra, expected):
    source = tmp_path / name
    source.write_bytes(content)
    memory_file = tmp_path / "memory.db"

    status = main(["ingest", str(source), "--memory", str(memory_file), "--quiet", *extra])

    assert status == 2
    assert expected in capsys.readouterr().err


def test_ingest_device_file(tmp_path, capsys):
    status = main(["ingest", "/dev/null", "--memory", str(tmp_path / "memory.db")])

    assert status == 2
    assert "is not a regular file" in capsys.readouterr().err


def test_ingest_directory_input(tmp_path, capsys):
    status = main(["ingest", str(tmp_path), "--memory", str(tmp_path / "memory.db")])

    assert status == 2
    assert "is a directory; expected a file" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0", "-5"])
def test_ingest_batch_size_below_one(tmp_path, conversation_file, capsys, size):
    status = main(["ingest", str(conversation_file), "--memory", str(tmp_path / "m.db"), "--batch-size", size])

    assert status == 2
    assert f"--batch-size must be >= 1, got {size}" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["recall", "tomatoes"], ["ingest", "notes.txt"]])
def test_memory_path_is_folder(tmp_path, capsys, command):
    (tmp_path / "notes.txt").write_text("Tomatoes ripen in July.\n", encoding="utf-8")
    command = [str(tmp_path / part) if part.endswith(".txt") else part for part in command]

    status = main([*command, "--memory", str(tmp_path)])

    assert status == 2
    assert "is a folder; expected the path of a memory file" in capsys.readouterr().err


def test_recall_missing_file_creates_nothing(tmp_path, capsys):
    missing = tmp_path / "typo" / "memory.db"

    status = main(["recall", "tomatoes", "--memory", str(missing)])

    assert status == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.parent.exists()


def test_recall_after_ingest(tmp_path, conversation_file, capsys):
    memory_file = tmp_path / "memory.db"
    main(["ingest", str(conversation_file), "--memory", str(memory_file), "--quiet"])
    capsys.readouterr()

    status = main(["-v", "recall", "which tomatoes ripen early", "--memory", str(memory_file), "-k", "1", "--json"])

    assert status == 0
    results = json.loads(capsys.readouterr().out)
    assert results[0]["id"] == "garden:D1:3"
    assert -1.0 <= results[0]["similarity"] <= 1.0


def test_verbose_flag_before_chat(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["-v", "chat", "--help"])

    assert stop.value.code == 0
    assert "--no-llm" in capsys.readouterr().out
