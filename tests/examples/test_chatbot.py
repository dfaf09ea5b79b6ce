"""The chatbot example: memory across runs, two-hop recall, commands and model backends."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import HumanMessage, SystemMessage

from nuonuo_core import AssociativeMemory, HashingEmbedder
from tests.conftest import REPO_ROOT

CHATBOT = REPO_ROOT / "examples" / "chatbot.py"

DAY_ONE = [
    "My dog is Max.",
    "I work night shifts as a nurse in Porto.",
    "My sister Rita plays the violin.",
    "Max loves the beach.",
    "I am allergic to peanuts.",
]
QUESTION = "Where does my dog like to go?"

# A --show-recall result line: "    2. [1a2b3c4d] score 0.414, 1 hop, you, just now: Max loves the beach."
RESULT_LINE = re.compile(r"^\s+\d+\. \[(?P<id>\w+)\] score [\d.]+, (?P<reached>direct hit|(?P<hops>\d+) hops?), .*?: (?P<text>.*)$")
PATH_LINE = re.compile(r"^\s+path \((?P<length>\d+) memories\): (?P<steps>.*)$")


@pytest.fixture(scope="module")
def chatbot() -> types.ModuleType:
    """The example script, loaded as ``nuonuo chat`` loads it: not added to sys.modules."""
    spec = importlib.util.spec_from_file_location("chatbot_example", CHATBOT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run_chat(chatbot: types.ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             argv: list[str], lines: list[str]) -> tuple[int, str, str]:
    """Run ``main(argv)`` in this process with ``lines`` on standard input."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    # main() sets this variable when it is unset; monkeypatch restores it afterwards.
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    status = chatbot.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_process(argv: list[str], lines: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the chatbot script in a new Python process with ``lines`` on standard input."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, str(CHATBOT), *argv], input="".join(f"{line}\n" for line in lines),
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )


def recall_entries(output: str) -> list[dict[str, Any]]:
    """Parse ``--show-recall`` output into ``{"text", "hops", "path"}`` entries, paths as texts."""
    entries: list[dict[str, Any]] = []
    for line in output.splitlines():
        result = RESULT_LINE.match(line)
        if result:
            hops = 0 if result["reached"] == "direct hit" else int(result["hops"])
            entries.append({"text": result["text"], "hops": hops, "path": [result["text"]]})
            continue
        path = PATH_LINE.match(line)
        if path and entries:
            texts = [json.loads(step.split("] ", 1)[1]) for step in path["steps"].split(" -> ")]
            assert len(texts) == int(path["length"])
            entries[-1]["path"] = texts
    return entries


def hashing_args(path: Path, *extra: str) -> list[str]:
    return ["--hashing", "--memory", str(path), "--user", "ana", *extra]


# ---------------------------------------------------------------- memory across runs


@pytest.mark.slow
def test_second_run_recalls_two_hop_memory(tmp_path):
    memory_file = tmp_path / "chat.db"
    first_prompts = tmp_path / "day1.jsonl"
    second_prompts = tmp_path / "day2.jsonl"
    common = ["--fake-llm", "--memory", str(memory_file), "--user", "ana"]

    day_one = run_process([*common, "--record-prompts", str(first_prompts)], DAY_ONE)
    assert day_one.returncode == 0, day_one.stderr
    day_two = run_process([*common, "--record-prompts", str(second_prompts), "--show-recall"], [QUESTION])
    assert day_two.returncode == 0, day_two.stderr

    # The second process starts with the first one's turns: five lines and five replies.
    assert "10 memories stored" in day_two.stdout

    # The question's prompt contains the beach fact, which it never mentions.
    prompts = [json.loads(line) for line in second_prompts.read_text().splitlines()]
    assert len(prompts) == 1
    system, human = prompts[0]["messages"]
    assert system["type"] == "system"
    assert "Max loves the beach." in system["content"]
    assert "My dog is Max." in system["content"]
    assert human == {"type": "human", "content": QUESTION}

    # The beach memory was reached through the dog memory, one link away.
    entries = {entry["text"]: entry for entry in recall_entries(day_two.stdout)}
    assert "Max loves the beach." in entries, day_two.stdout
    beach = entries["Max loves the beach."]
    assert beach["hops"] >= 1
    assert len(beach["path"]) >= 2
    assert beach["path"][0] == "My dog is Max."
    assert beach["path"][-1] == "Max loves the beach."


@pytest.mark.slow
def test_no_llm_scripts_show_two_hop_path(chatbot, monkeypatch, capsys, tmp_path):
    memory_file = tmp_path / "demo.db"
    argv = ["--no-llm", "--memory", str(memory_file), "--user", "ana", "--show-recall"]
    day_one = (REPO_ROOT / "examples" / "chat_script_day1.txt").read_text().splitlines()
    day_two = (REPO_ROOT / "examples" / "chat_script_day2.txt").read_text().splitlines()

    status, _, err = run_chat(chatbot, monkeypatch, capsys, argv, day_one)
    assert status == 0, err
    status, out, err = run_chat(chatbot, monkeypatch, capsys, argv, day_two)
    assert status == 0, err

    # The first question reaches the beach through the dog, in its recall and its reply.
    first_answer = out.split("you> What should I avoid eating?")[0]
    entries = {entry["text"]: entry for entry in recall_entries(first_answer)}
    beach = entries["Max loves running on the beach at Matosinhos."]
    assert beach["hops"] >= 1
    assert beach["path"][0] == "My dog is called Max."
    assert re.search(r"- Max loves running on the beach at Matosinhos\. \(you, [^)]*hops? from "
                     r"\"My dog is called Max\.\"", first_answer)

    # /forget peanuts removes the allergy, so the repeated question no longer recalls it.
    before_forget, after_forget = out.split("you> /forget peanuts")
    assert "I'm allergic to peanuts." in before_forget
    forgot, repeated = after_forget.split("you> What should I avoid eating?")
    assert "Forgot [" in forgot
    assert "peanuts" in forgot
    assert "allergic" not in repeated


# ---------------------------------------------------------------- commands


def test_memories_lists_most_recent_last(chatbot, monkeypatch, capsys, tmp_path):
    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(tmp_path / "m.db", "--no-llm"),
                              ["first fact", "second fact", "third fact", "/memories", "/memories 1", "/memories x"])
    assert status == 0
    listing = out.split("you> /memories\n", 1)[1].split("you> /memories 1", 1)[0]
    assert listing.index("first fact") < listing.index("second fact") < listing.index("third fact")
    assert re.search(r"\[[0-9a-f]{8}\] you, just now: first fact", listing)
    last_one = out.split("you> /memories 1\n", 1)[1].split("you> /memories x", 1)[0]
    assert "third fact" in last_one
    assert "second fact" not in last_one
    assert "(2 older not shown" in last_one
    assert "invalid /memories argument 'x'" in out


def test_forget_by_id_prefix(chatbot, monkeypatch, capsys, tmp_path):
    path = tmp_path / "m.db"
    run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), ["keep this", "drop this"])
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        drop_id = next(r.id for r in memory.list(("ana",)) if r.text == "drop this")

    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"),
                              [f"/forget {drop_id[:6]}"])
    assert status == 0
    assert f"Forgot [{drop_id[:8]}] drop this" in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert [r.text for r in memory.list(("ana",))] == ["keep this"]


def test_forget_text_confirms_several(chatbot, monkeypatch, capsys, tmp_path):
    path = tmp_path / "m.db"
    lines = ["Max loves the beach", "Max is my dog", "Rita plays the violin"]
    run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), lines)

    # Two matches need a "yes"; anything else keeps them.
    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"),
                              ["/forget max", "no", "/memories"])
    assert status == 0
    assert "2 memories contain 'max'" in out
    assert "Nothing was forgotten." in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert memory.count(("ana",)) == 3

    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"),
                              ["/forget max", "yes", "/forget violin", "/forget nothing-like-this"])
    assert status == 0
    assert re.search(r"Forgot \[\w{8}\] Max loves the beach", out)
    assert re.search(r"Forgot \[\w{8}\] Max is my dog", out)
    assert re.search(r"Forgot \[\w{8}\] Rita plays the violin", out)
    assert "No memory has an id starting with or a text containing 'nothing-like-this'" in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert memory.count(("ana",)) == 0


def test_forget_all_needs_yes(chatbot, monkeypatch, capsys, tmp_path):
    path = tmp_path / "m.db"
    run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), ["one", "two"])
    run_chat(chatbot, monkeypatch, capsys,
             ["--hashing", "--memory", str(path), "--user", "rita", "--no-llm"], ["rita's fact"])

    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), ["/forget all", "y"])
    assert status == 0
    assert "Forget all 2 memories of user 'ana'?" in out
    assert "Nothing was forgotten." in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert memory.count(("ana",)) == 2

    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), ["/forget all", "yes"])
    assert "Forgot 2 memories." in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert memory.count(("ana",)) == 0
        assert [r.text for r in memory.list(("rita",))] == ["rita's fact"]


def test_forget_all_at_end_of_input(chatbot, monkeypatch, capsys, tmp_path):
    path = tmp_path / "m.db"
    run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), ["one"])
    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), ["/forget all"])
    assert status == 0
    assert "Nothing was forgotten." in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert memory.count(("ana",)) == 1


def test_quit_help_and_unknown_command(chatbot, monkeypatch, capsys, tmp_path):
    path = tmp_path / "m.db"
    status, out, _ = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"),
                              ["/help", "/dance", "", "/quit", "after quit"])
    assert status == 0
    assert "/forget all" in out
    assert "/memories" in out
    assert "unknown command '/dance'; type /help for the list" in out
    assert "after quit" not in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert memory.count(("ana",)) == 0


def test_undecodable_line_skips_one_turn(chatbot, monkeypatch, capsys, tmp_path):
    path = tmp_path / "m.db"
    # A byte that is not UTF-8, as Python decodes it from a terminal: a lone surrogate.
    status, out, err = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"),
                                ["my dog is Max", "\udcff bad bytes", "where is Max"])
    assert status == 0
    assert "this message was not stored" in err
    assert "you> where is Max" in out
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert memory.count(("ana",)) == 2


def test_nuonuo_chat_runs_example(monkeypatch, capsys, tmp_path):
    from nuonuo_core.cli import main as nuonuo_main

    monkeypatch.setattr(sys, "stdin", io.StringIO("hello there\n"))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    status = nuonuo_main(["chat", *hashing_args(tmp_path / "m.db", "--no-llm")])
    out = capsys.readouterr().out
    assert status == 0
    assert "you> hello there" in out
    assert "nuonuo> I don't remember anything related to that yet." in out


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize(("argv", "message"), [
    (["-k", "0"], "argument -k: invalid value '0': expected an integer >= 1"),
    (["--hops", "two"], "argument --hops: invalid value 'two': expected an integer >= 1"),
    (["--recent-turns", "-1"], "expected an integer >= 0"),
    (["--user", "  "], "invalid user '  ': expected a non-blank name"),
    (["--model", "gemma3:4b"], "invalid --model 'gemma3:4b': expected ollama:NAME, hf:FOLDER or gguf:FILE"),
    (["--model", "hf:"], "invalid --model 'hf:'"),
    (["--no-llm", "--record-prompts", "p.jsonl"], "--record-prompts records what a chat model is sent"),
    (["--no-llm", "--fake-llm"], "not allowed with argument"),
])
def test_invalid_arguments_exit_2(chatbot, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        chatbot.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_locked_memory_file_keeps_memories(chatbot, monkeypatch, capsys, tmp_path):
    path = tmp_path / "m.db"
    with AssociativeMemory(path, embedder=HashingEmbedder()) as holder:
        holder.add("already here", namespace=("ana",))
        status, _, err = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--no-llm"), ["new line"])
    assert status == 1
    assert f"error: cannot open the memory file {path}" in err
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert [r.text for r in memory.list(("ana",))] == ["already here"]


def test_describe_age_units(chatbot):
    now = 1_000_000.0
    assert chatbot.describe_age(now - 5, now) == "just now"
    assert chatbot.describe_age(now - 120, now) == "2 min ago"
    assert chatbot.describe_age(now - 3600, now) == "1 hour ago"
    assert chatbot.describe_age(now - 3 * 86400 - 10, now) == "3 days ago"
    assert chatbot.describe_age(None, now) == "at an unknown time"


# ---------------------------------------------------------------- Ollama


class FakeOllama:
    """An Ollama imitation on 127.0.0.1: lists models and streams a fixed chat reply."""

    def __init__(self, models: list[str], reply: list[str], fail_chat: bool = False) -> None:
        self.models = models
        self.reply = reply
        self.fail_chat = fail_chat
        self.chat_requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/api/tags":
                    self.send_error(404)
                    return
                self.send_json(200, {"models": [{"name": name, "model": name} for name in owner.models]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/api/chat":
                    self.send_error(404)
                    return
                owner.chat_requests.append(body)
                if owner.fail_chat:
                    self.send_json(500, {"error": "model runner crashed"})
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.end_headers()
                for piece in owner.reply:
                    self.write_line({"model": body["model"], "created_at": "2025-01-01T00:00:00Z",
                                     "message": {"role": "assistant", "content": piece}, "done": False})
                self.write_line({"model": body["model"], "created_at": "2025-01-01T00:00:00Z",
                                 "message": {"role": "assistant", "content": ""}, "done": True,
                                 "done_reason": "stop", "total_duration": 1, "load_duration": 1,
                                 "prompt_eval_count": 1, "prompt_eval_duration": 1, "eval_count": 1,
                                 "eval_duration": 1})

            def send_json(self, status: int, value: Any) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def write_line(self, value: Any) -> None:
                self.wfile.write((json.dumps(value) + "\n").encode())
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    server = FakeOllama(models=["gemma3:4b"], reply=["Max is ", "your dog."])
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ollama_reply_uses_recalled_memory(chatbot, monkeypatch, capsys, tmp_path, fake_ollama):
    pytest.importorskip("langchain_ollama")
    path = tmp_path / "m.db"
    argv = hashing_args(path, "--ollama-url", fake_ollama.url, "--model", "ollama:gemma3:4b")
    run_chat(chatbot, monkeypatch, capsys, argv, ["My dog is called Max."])

    status, out, err = run_chat(chatbot, monkeypatch, capsys, argv, ["What is my dog called?"])
    assert status == 0, err
    assert "nuonuo> Max is your dog.\n" in out
    request = fake_ollama.chat_requests[-1]
    assert request["model"] == "gemma3:4b"
    system = request["messages"][0]
    assert system["role"] == "system"
    assert "User: My dog is called Max." in system["content"]
    assert request["messages"][-1] == {"role": "user", "content": "What is my dog called?"}
    with AssociativeMemory(path, embedder=HashingEmbedder()) as memory:
        assert [r.text for r in memory.list(("ana",))][-2:] == ["What is my dog called?", "Max is your dog."]


def test_ollama_failure_keeps_chatting(chatbot, monkeypatch, capsys, tmp_path, fake_ollama):
    pytest.importorskip("langchain_ollama")
    fake_ollama.fail_chat = True
    path = tmp_path / "m.db"
    argv = hashing_args(path, "--ollama-url", fake_ollama.url)
    status, out, err = run_chat(chatbot, monkeypatch, capsys, argv, ["first", "second", "/memories"])
    assert status == 0
    assert err.count("error: the model did not reply") == 2
    assert "model runner crashed" in err
    assert "No memories stored for user 'ana' yet." in out


def test_ollama_missing_model_names_pull(chatbot, monkeypatch, capsys, tmp_path, fake_ollama):
    pytest.importorskip("langchain_ollama")
    fake_ollama.models = ["llama3.2:latest"]
    status, _, err = run_chat(chatbot, monkeypatch, capsys,
                              hashing_args(tmp_path / "m.db", "--ollama-url", fake_ollama.url), ["hi"])
    assert status == 1
    assert "has no model 'gemma3:4b' (it has: llama3.2:latest); pull it with: ollama pull gemma3:4b" in err


def test_unreachable_ollama_explains_setup(chatbot, monkeypatch, capsys, tmp_path):
    pytest.importorskip("langchain_ollama")
    url = f"http://127.0.0.1:{closed_loopback_port()}"
    path = tmp_path / "m.db"
    status, out, err = run_chat(chatbot, monkeypatch, capsys, hashing_args(path, "--ollama-url", url), ["hi"])
    assert status == 1
    assert f"error: no Ollama server is reachable at {url}" in err
    for hint in ("ollama pull gemma3:4b", "--model hf:~/models/gemma-3-4b-it",
                 "--model gguf:~/models/gemma-3-4b-it-q4_0.gguf", "python examples/chatbot.py --no-llm"):
        assert hint in err
    assert out == ""
    assert not path.exists()


# ---------------------------------------------------------------- local model files


@pytest.mark.parametrize(("spec", "message"), [
    ("hf:{tmp}/absent", "error: no model folder at {tmp}/absent"),
    ("hf:{tmp}", "error: {tmp} is not a Hugging Face model folder: it has no config.json"),
    ("gguf:{tmp}/absent.gguf", "error: no GGUF file at {tmp}/absent.gguf"),
    ("gguf:{tmp}/notes.txt", "is not a GGUF file: it does not start with the bytes 'GGUF'"),
])
def test_missing_model_file_explains_setup(chatbot, monkeypatch, capsys, tmp_path, spec, message):
    (tmp_path / "notes.txt").write_text("not a model")
    argv = hashing_args(tmp_path / "m.db", "--model", spec.format(tmp=tmp_path))
    status, _, err = run_chat(chatbot, monkeypatch, capsys, argv, ["hi"])
    assert status == 1
    assert message.format(tmp=tmp_path) in err
    assert "How to get Gemma 3 4B for each backend" in err


def test_gguf_without_llama_cpp_names_install(chatbot, monkeypatch, capsys, tmp_path):
    model_file = tmp_path / "model.gguf"
    model_file.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes the import fail
    status, _, err = run_chat(chatbot, monkeypatch, capsys,
                              hashing_args(tmp_path / "m.db", "--model", f"gguf:{model_file}"), ["hi"])
    assert status == 1
    assert "--model gguf:... needs llama-cpp-python: pip install 'nuonuo[gguf]'" in err


class TokenCollector(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


@pytest.fixture(params=["sync", "async"])
def mode(request) -> str:
    return request.param


def invoke(model: Any, messages: list[Any], mode: str, callbacks: list[Any]) -> Any:
    if mode == "sync":
        return model.invoke(messages, config={"callbacks": callbacks})
    return asyncio.run(model.ainvoke(messages, config={"callbacks": callbacks}))


@pytest.fixture
def fake_llama_cpp(monkeypatch) -> types.SimpleNamespace:
    """A stand-in ``llama_cpp`` module whose Llama streams a fixed reply and records its calls."""
    calls = types.SimpleNamespace(init=None, chats=[])

    class Llama:
        def __init__(self, **kwargs: Any) -> None:
            calls.init = kwargs

        def create_chat_completion(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
            calls.chats.append(kwargs)
            yield {"choices": [{"delta": {"role": "assistant"}}]}
            for piece in ("Max ", "loves ", "the beach."):
                yield {"choices": [{"delta": {"content": piece}}]}

    module = types.ModuleType("llama_cpp")
    module.Llama = Llama  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    return calls


def test_gguf_model_streams_reply(chatbot, tmp_path, fake_llama_cpp, mode):
    model_file = tmp_path / "gemma.gguf"
    model_file.write_bytes(b"GGUF" + bytes(60))
    model = chatbot.load_gguf_model(model_file, max_tokens=32)
    assert fake_llama_cpp.init["model_path"] == str(model_file)
    assert fake_llama_cpp.init["n_ctx"] == chatbot.GGUF_CONTEXT_TOKENS

    collector = TokenCollector()
    reply = invoke(model, [SystemMessage("Memories: Max loves the beach."), HumanMessage("Where?")], mode,
                   [collector])
    assert reply.content == "Max loves the beach."
    assert collector.tokens == ["Max ", "loves ", "the beach."]
    chat = fake_llama_cpp.chats[-1]
    assert chat["messages"] == [{"role": "system", "content": "Memories: Max loves the beach."},
                                {"role": "user", "content": "Where?"}]
    assert chat["max_tokens"] == 32
    assert chat["stream"] is True


def test_gguf_backend_chats(chatbot, monkeypatch, capsys, tmp_path, fake_llama_cpp):
    model_file = tmp_path / "gemma.gguf"
    model_file.write_bytes(b"GGUF" + bytes(60))
    status, out, err = run_chat(chatbot, monkeypatch, capsys,
                                hashing_args(tmp_path / "m.db", "--model", f"gguf:{model_file}"), ["Hello"])
    assert status == 0, err
    assert "nuonuo> Max loves the beach.\n" in out


def make_tiny_chat_model(folder: Path, chat_template: str | None) -> None:
    """Save a randomly initialised two-layer Gemma 3 text model with a word-level tokenizer.

    It generates ordinary words only, so every reply is non-empty.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    words = ["<pad>", "<eos>", "<bos>", "<unk>", *"user model system : my dog is max loves the beach where".split()]
    tokenizer = Tokenizer(models.WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")
    if chat_template is not None:
        fast.chat_template = chat_template
    config = Gemma3TextConfig(
        vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=128,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    # Random weights may pick a special token first, which decodes to nothing.
    model.generation_config.suppress_tokens = [0, 1, 2, 3]
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


TINY_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}model : {% endif %}"
)


def test_transformers_model_streams_reply(chatbot, tmp_path, mode):
    pytest.importorskip("transformers")
    make_tiny_chat_model(tmp_path / "tiny", TINY_TEMPLATE)
    model = chatbot.load_transformers_model(tmp_path / "tiny", max_new_tokens=4)

    collector = TokenCollector()
    reply = invoke(model, [SystemMessage("my dog is max"), HumanMessage("where")], mode, [collector])
    assert isinstance(reply.content, str)
    assert reply.content.strip()
    assert "".join(collector.tokens).strip() == reply.content


def test_transformers_backend_chats(chatbot, monkeypatch, capsys, tmp_path):
    pytest.importorskip("transformers")
    make_tiny_chat_model(tmp_path / "tiny", TINY_TEMPLATE)
    argv = hashing_args(tmp_path / "m.db", "--model", f"hf:{tmp_path / 'tiny'}", "--max-tokens", "3")
    status, out, err = run_chat(chatbot, monkeypatch, capsys, argv, ["my dog is max"])
    assert status == 0, err
    reply = out.split("nuonuo> ", 1)[1].splitlines()[0]
    assert reply.strip()
    with AssociativeMemory(tmp_path / "m.db", embedder=HashingEmbedder()) as memory:
        assert [r.text for r in memory.list(("ana",))] == ["my dog is max", reply.strip()]


def test_transformers_without_chat_template(chatbot, tmp_path):
    pytest.importorskip("transformers")
    make_tiny_chat_model(tmp_path / "tiny", None)
    with pytest.raises(chatbot.ModelUnavailableError, match="has no chat template; use an instruction-tuned"):
        chatbot.load_transformers_model(tmp_path / "tiny", max_new_tokens=4)
