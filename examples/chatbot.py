"""Chat in the terminal with Gemma, remembering past conversations with NuoNuo.

The chatbot is a classic ``ConversationChain`` whose memory is
:class:`~nuonuo_langchain.NuoNuoMemory`. Every turn is stored in a memory file,
so a conversation days later still finds it. With ``--hops 2`` (the default)
recall also follows associations. "My dog is called Max." is linked to "Max
loves the beach." by the name they share, so "Where does my dog like to go?"
reaches the beach in one hop. ``--show-recall`` prints, for each turn, the
memories put in the prompt and the chain of memories that led to each.

Model backends (``--model``):

- ``ollama:NAME``: a model served by Ollama on this machine; the default is
  ``ollama:gemma3:4b`` at http://127.0.0.1:11434.
- ``hf:FOLDER``: a local Hugging Face model folder, run by transformers.
- ``gguf:FILE``: a local GGUF file, run by llama-cpp-python.

``--no-llm`` runs without any model: the reply lists the recalled memories.
``--fake-llm`` uses a fake chat model that always replies "Noted.", for tests.

Lines are read from standard input, so a file of lines can be piped in::

    python examples/chatbot.py --no-llm --memory demo-chat.db < examples/chat_script_day1.txt
    python examples/chatbot.py --no-llm --memory demo-chat.db --show-recall < examples/chat_script_day2.txt

Type ``/help`` in the chat for the commands (``/memories``, ``/forget``, ``/quit``).
"""

# No "from __future__ import annotations": `nuonuo chat` loads this file without
# adding it to sys.modules, where pydantic looks up the names in the chat
# models' string annotations, so annotations must be evaluated when defined.

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_classic.chains import ConversationChain
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel, FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate
from pydantic import ConfigDict, Field

from nuonuo_core import AssociativeMemory, HashingEmbedder, InvalidInputError, MemoryRecord, NuoNuoError, RecallResult
from nuonuo_core.storage import default_memory_path
from nuonuo_langchain import NuoNuoMemory
from nuonuo_langchain.memory import AI_ROLE, HUMAN_ROLE, ROLE_KEY

DEFAULT_MODEL = "ollama:gemma3:4b"
DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"
DEFAULT_K = 4
DEFAULT_HOPS = 2
DEFAULT_RECENT_TURNS = 3
DEFAULT_MAX_TOKENS = 512

GGUF_CONTEXT_TOKENS = 8192
"""Context window requested from llama.cpp. Its own default of 512 tokens is too
small for the instructions, the recalled memories and a reply."""

FAKE_REPLY = "Noted."
"""The only reply of the ``--fake-llm`` chat model."""

MEMORY_FILE_NAME = "chat.db"
"""Name of the default memory file, next to the ``nuonuo`` command's own file."""

SHORT_ID_LENGTH = 8
"""Characters of a memory id shown in listings. ``/forget`` accepts any unique
prefix of at least :data:`MIN_ID_PREFIX` characters."""

MIN_ID_PREFIX = 4

MEMORIES_SHOWN = 20
"""Memories listed by a bare ``/memories``."""

SYSTEM_PROMPT = """\
You are a friendly assistant with a long-term memory of your conversations with \
the user. Below are memories recalled for the user's new message: lines from \
earlier conversations, possibly from days ago, then the latest turns of this \
one. Use them when they help to answer. When they do not contain the answer, \
say that you do not remember instead of guessing.

Memories:
{history}"""

GEMMA_SETUP = """\
How to get Gemma 3 4B for each backend:

  Ollama (the default backend), see https://ollama.com/download:
      ollama serve                 # unless Ollama already runs as a service
      ollama pull gemma3:4b
      python examples/chatbot.py

  A Hugging Face model folder (accept the Gemma licence on
  https://huggingface.co/google/gemma-3-4b-it first):
      pip install 'nuonuo[transformers-chat]'
      hf auth login
      hf download google/gemma-3-4b-it --local-dir ~/models/gemma-3-4b-it
      python examples/chatbot.py --model hf:~/models/gemma-3-4b-it

  A GGUF file for llama.cpp (same licence, on
  https://huggingface.co/google/gemma-3-4b-it-qat-q4_0-gguf):
      pip install 'nuonuo[gguf]'   # builds llama.cpp from source
      hf download google/gemma-3-4b-it-qat-q4_0-gguf gemma-3-4b-it-q4_0.gguf --local-dir ~/models
      python examples/chatbot.py --model gguf:~/models/gemma-3-4b-it-q4_0.gguf

  Or chat without a model; the replies then list the recalled memories:
      python examples/chatbot.py --no-llm"""

HELP = f"""\
Type a message to chat. Commands:
  /memories          list the last {MEMORIES_SHOWN} stored memories, most recent last, with their ids
  /memories N        list the last N memories; /memories all lists every one
  /forget ID         forget the memory whose id starts with ID (at least {MIN_ID_PREFIX} characters)
  /forget TEXT       forget the memories that contain TEXT (case-insensitive);
                     and asks to confirm when more than one matches
  /forget all        forget every memory of this user, after typing 'yes' to confirm
  /help              show this help
  /quit              leave the chat (so does /exit or end of input)"""


class ModelUnavailableError(Exception):
    """The chosen chat model cannot be used: server down, file missing, package missing."""


# ---------------------------------------------------------------- chat models


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """Convert LangChain messages to the ``{"role", "content"}`` dicts of chat templates."""
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    chat = []
    for message in messages:
        if message.type not in roles:
            raise ValueError(
                f"cannot send a {message.type!r} message to a local model; "
                f"expected one of {sorted(roles)}"
            )
        chat.append({"role": roles[message.type], "content": message.text})
    return chat


class TransformersChatModel(BaseChatModel):
    """A chat model around a transformers ``text-generation`` pipeline.

    The pipeline applies the tokenizer's chat template to the messages. Tokens
    are reported to the callbacks' ``on_llm_new_token`` as they are generated.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    generator: Any = Field(exclude=True)
    """The ``transformers.pipeline("text-generation", ...)`` that generates replies."""

    make_streamer: Callable[[Callable[[str], None]], Any] | None = Field(default=None, exclude=True)
    """Builds a transformers streamer that passes each piece of decoded text to a
    function; no streaming when ``None``."""

    max_new_tokens: int = DEFAULT_MAX_TOKENS
    """Maximum number of tokens generated per reply."""

    @property
    def _llm_type(self) -> str:
        return "transformers-text-generation"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        options: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "return_full_text": False}
        if stop:
            options["stop_strings"] = stop
            options["tokenizer"] = self.generator.tokenizer
        if run_manager is not None and self.make_streamer is not None:
            options["streamer"] = self.make_streamer(run_manager.on_llm_new_token)
        output = self.generator(to_chat_dicts(messages), **options)
        generated = output[0]["generated_text"]
        # With chat input some versions return the whole conversation, reply last.
        if isinstance(generated, list):
            generated = generated[-1]["content"]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(generated.strip()))])


class LlamaCppChatModel(BaseChatModel):
    """A chat model around a ``llama_cpp.Llama`` loaded from a GGUF file.

    llama.cpp formats the messages with the chat template stored in the GGUF
    file. Tokens are reported to the callbacks' ``on_llm_new_token`` as they
    are generated.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llama: Any = Field(exclude=True)
    """The ``llama_cpp.Llama`` that generates replies."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    """Maximum number of tokens generated per reply."""

    @property
    def _llm_type(self) -> str:
        return "llama-cpp"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        chunks = self.llama.create_chat_completion(
            messages=to_chat_dicts(messages), max_tokens=self.max_tokens, stop=stop, stream=True,
        )
        pieces = []
        for chunk in chunks:
            piece = chunk["choices"][0]["delta"].get("content")
            if not piece:
                continue
            pieces.append(piece)
            if run_manager is not None:
                run_manager.on_llm_new_token(piece)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("".join(pieces).strip()))])


MODEL_BACKENDS = ("ollama", "hf", "gguf")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """Split a ``--model`` value into its backend and target: ``"ollama:gemma3:4b"`` -> ``("ollama", "gemma3:4b")``.

    Raises:
        ValueError: when ``spec`` names no known backend or no target.
    """
    backend, _, target = spec.partition(":")
    if backend not in MODEL_BACKENDS or not target.strip():
        raise ValueError(f"invalid --model {spec!r}: expected ollama:NAME, hf:FOLDER or gguf:FILE")
    return backend, target.strip()


def load_chat_model(backend: str, target: str, *, max_tokens: int, ollama_url: str) -> BaseChatModel:
    """Load the chat model of a backend from :data:`MODEL_BACKENDS`.

    ``target`` is the Ollama model name, the model folder or the GGUF file.

    Raises:
        ModelUnavailableError: when the model cannot be used; the message gives the cause.
    """
    if backend == "ollama":
        return load_ollama_model(target, ollama_url, max_tokens)
    if backend == "hf":
        return load_transformers_model(Path(target).expanduser(), max_tokens)
    if backend == "gguf":
        return load_gguf_model(Path(target).expanduser(), max_tokens)
    raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(MODEL_BACKENDS)}")


def ollama_model_names(url: str, timeout: float = 3.0) -> list[str]:
    """Return the names of the models pulled into the Ollama server at ``url``.

    Raises:
        ModelUnavailableError: when no Ollama server is reachable at ``url``.
    """
    # No proxy: the server is on this machine, and a proxy from the environment
    # would send the request elsewhere.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url.rstrip('/')}/api/tags", timeout=timeout) as response:
            listing = json.load(response)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ModelUnavailableError(f"no Ollama server is reachable at {url} ({reason})") from error
    except ValueError as error:
        raise ModelUnavailableError(f"the server at {url} is not Ollama: invalid JSON from /api/tags ({error})") from error
    if not isinstance(listing, dict) or not isinstance(listing.get("models"), list):
        raise ModelUnavailableError(f"the server at {url} is not Ollama: /api/tags returned no model list")
    return [entry.get("name", "") for entry in listing["models"] if isinstance(entry, dict)]


def load_ollama_model(name: str, url: str, max_tokens: int) -> BaseChatModel:
    """Return a ``ChatOllama`` for ``name`` after checking that the server has pulled it."""
    try:
        from langchain_ollama import ChatOllama
    except ImportError as error:
        raise ModelUnavailableError(
            "--model ollama:... needs langchain-ollama: pip install 'nuonuo[ollama]'"
        ) from error
    pulled = ollama_model_names(url)
    # Ollama lists a model pulled without a tag under "NAME:latest".
    if name not in pulled and f"{name}:latest" not in pulled:
        raise ModelUnavailableError(
            f"the Ollama server at {url} has no model {name!r} (it has: {', '.join(pulled) or 'none'}); "
            f"pull it with: ollama pull {name}"
        )
    return ChatOllama(model=name, base_url=url, num_predict=max_tokens)


def load_transformers_model(folder: Path, max_new_tokens: int) -> BaseChatModel:
    """Load an instruction-tuned model from a local Hugging Face folder, without network access."""
    if not folder.is_dir():
        raise ModelUnavailableError(f"no model folder at {folder}")
    if not (folder / "config.json").is_file():
        raise ModelUnavailableError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, TextStreamer, pipeline
    except ImportError as error:
        raise ModelUnavailableError(
            f"--model hf:... needs transformers ({error}): pip install 'nuonuo[transformers-chat]'"
        ) from error

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype="auto")
    except (OSError, ValueError) as error:
        raise ModelUnavailableError(f"cannot load the model in {folder}: {error}") from error
    if not tokenizer.chat_template:
        raise ModelUnavailableError(
            f"the tokenizer in {folder} has no chat template; use an instruction-tuned model "
            "such as google/gemma-3-4b-it"
        )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, device=device)

    class CallbackStreamer(TextStreamer):
        """Passes each piece of decoded reply text to a function instead of printing it."""

        def __init__(self, on_text: Callable[[str], None]) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.on_text = on_text

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.on_text(text)

    return TransformersChatModel(generator=generator, make_streamer=CallbackStreamer, max_new_tokens=max_new_tokens)


def load_gguf_model(path: Path, max_tokens: int) -> BaseChatModel:
    """Load a GGUF model file with llama-cpp-python, on the CPU."""
    if not path.is_file():
        raise ModelUnavailableError(f"no GGUF file at {path}")
    with path.open("rb") as file:
        magic = file.read(4)
    if magic != b"GGUF":
        raise ModelUnavailableError(f"{path} is not a GGUF file: it does not start with the bytes 'GGUF'")
    try:
        from llama_cpp import Llama
    except ImportError as error:
        raise ModelUnavailableError(
            "--model gguf:... needs llama-cpp-python: pip install 'nuonuo[gguf]' "
            "(it compiles llama.cpp, which takes several minutes)"
        ) from error
    try:
        llama = Llama(model_path=str(path), n_ctx=GGUF_CONTEXT_TOKENS, verbose=False)
    except ValueError as error:
        raise ModelUnavailableError(f"llama.cpp cannot load {path}: {error}") from error
    return LlamaCppChatModel(llama=llama, max_tokens=max_tokens)


# ---------------------------------------------------------------- callbacks


class PromptRecorder(BaseCallbackHandler):
    """Appends every prompt sent to a chat model to a JSON-lines file.

    Each line is ``{"messages": [{"type": "system" | "human" | "ai", "content": str}]}``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]],
                            **kwargs: Any) -> None:
        with self.path.open("a", encoding="utf-8") as file:
            for prompt in messages:
                record = {"messages": [{"type": m.type, "content": m.text} for m in prompt]}
                file.write(json.dumps(record, ensure_ascii=False) + "\n")


class TokenPrinter(BaseCallbackHandler):
    """Prints reply tokens as the model generates them."""

    def __init__(self) -> None:
        self.printed = False

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.printed = True
        sys.stdout.write(token)
        sys.stdout.flush()


# ---------------------------------------------------------------- formatting


def short_id(memory_id: str) -> str:
    return memory_id[:SHORT_ID_LENGTH]


def describe_age(timestamp: float | None, now: float | None = None) -> str:
    """Describe how long ago ``timestamp`` (POSIX seconds) was: "just now", "5 min ago", "3 days ago"."""
    if timestamp is None:
        return "at an unknown time"
    seconds = max(0.0, (time.time() if now is None else now) - timestamp)
    if seconds >= 86400:
        days = int(seconds // 86400)
        return f"{days} day{'s' if days > 1 else ''} ago"
    if seconds >= 3600:
        hours = int(seconds // 3600)
        return f"{hours} hour{'s' if hours > 1 else ''} ago"
    if seconds >= 60:
        return f"{int(seconds // 60)} min ago"
    return "just now"


def speaker(metadata: dict[str, Any]) -> str:
    """Return the speaker of a stored turn: "you" for the user, "assistant" for the model."""
    role = metadata.get(ROLE_KEY)
    if role == HUMAN_ROLE:
        return "you"
    if role == AI_ROLE:
        return "assistant"
    return "note"


def format_recall(results: list[RecallResult], memory: AssociativeMemory, k: int, hops: int) -> list[str]:
    """Return the ``--show-recall`` lines: each recalled memory and the path that reached it.

    A path lists the memories from the direct hit to the result as
    ``[id] "text" -> [id] "text"``; a direct hit has a path of one memory.
    """
    if not results:
        return [f"  recall (k={k}, hops={hops}): nothing recalled"]
    lines = [f"  recall (k={k}, hops={hops}):"]
    for rank, result in enumerate(results, start=1):
        reached = "direct hit" if result.hops == 0 else f"{result.hops} hop{'s' if result.hops > 1 else ''}"
        lines.append(
            f"    {rank}. [{short_id(result.id)}] score {result.score:.3f}, {reached}, "
            f"{speaker(result.metadata)}, {describe_age(result.timestamp)}: {result.text}"
        )
        if result.hops > 0:
            steps = [f"[{short_id(i)}] {json.dumps(memory.get(i).text, ensure_ascii=False)}" for i in result.path]
            lines.append(f"       path ({len(result.path)} memories): {' -> '.join(steps)}")
    return lines


def recall_reply(results: list[RecallResult], memory: AssociativeMemory) -> str:
    """Return the ``--no-llm`` reply: the recalled memories, each with the path that reached it."""
    if not results:
        return "I don't remember anything related to that yet."
    lines = ["I remember:"]
    for result in results:
        origin = f"{speaker(result.metadata)}, {describe_age(result.timestamp)}"
        if result.hops > 0:
            before = " -> ".join(json.dumps(memory.get(i).text, ensure_ascii=False) for i in result.path[:-1])
            origin += f"; {result.hops} hop{'s' if result.hops > 1 else ''} from {before}"
        lines.append(f"  - {result.text} ({origin})")
    return "\n".join(lines)


def format_record(record: MemoryRecord) -> str:
    when = describe_age(record.timestamp if record.timestamp is not None else record.created_at)
    return f"  [{short_id(record.id)}] {speaker(record.metadata)}, {when}: {record.text}"


# ---------------------------------------------------------------- the chat


class LineReader:
    """Reads lines from standard input: with a prompt on a terminal, echoed after the prompt otherwise.

    Echoing piped lines keeps a transcript of a scripted conversation readable.
    """

    def __init__(self) -> None:
        self.interactive = sys.stdin.isatty()
        if self.interactive:
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:
                pass

    def read(self, prompt: str) -> str | None:
        """Return the next line without its newline, or ``None`` at the end of input."""
        if self.interactive:
            try:
                return input(prompt)
            except EOFError:
                print()
                return None
        line = sys.stdin.readline()
        if not line:
            return None
        line = line.rstrip("\r\n")
        # Undecodable input bytes arrive as lone surrogates, which stdout may not encode.
        printable = line.encode("utf-8", "backslashreplace").decode("utf-8")
        print(f"{prompt}{printable}")
        return line


class Chat:
    """One chat session: reads lines, runs commands, replies and stores the turns.

    Args:
        memory: The conversation memory; its ``memory`` is the open core memory.
        chain: The chain that replies, or ``None`` for replies made of the recalled
            memories alone (``--no-llm``).
        reader: Source of the user's lines and confirmations.
        show_recall: Print the recalled memories and their paths before each reply.
        callbacks: Callbacks passed to every chain run.
    """

    def __init__(self, memory: NuoNuoMemory, chain: ConversationChain | None, reader: LineReader, *,
                 show_recall: bool, callbacks: Sequence[BaseCallbackHandler] = ()) -> None:
        assert memory.memory is not None  # NuoNuoMemory opens it when built
        self.memory = memory
        self.core: AssociativeMemory = memory.memory
        self.chain = chain
        self.reader = reader
        self.show_recall = show_recall
        self.callbacks = list(callbacks)

    @property
    def namespace(self) -> tuple[str, ...]:
        return self.memory.namespace

    def run(self) -> int:
        """Read lines until ``/quit`` or the end of input; return the exit status."""
        while True:
            line = self.reader.read("you> ")
            if line is None:
                return 0
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.run_command(line):
                    return 0
                continue
            try:
                self.reply(line)
            except InvalidInputError as error:
                # A line the memory cannot take (say, undecodable bytes) ends this turn, not the chat.
                print(f"error: {error}; this message was not stored", file=sys.stderr)

    # ------------------------------------------------------------ turns

    def recall(self, text: str) -> list[RecallResult]:
        """Recall for ``text`` exactly as the memory does when it fills the prompt."""
        # NOTE: the chain recalls once more, because NuoNuoMemory keeps no record of the
        # results it put in the prompt. Both calls see the same stored memories.
        return self.core.recall(text, self.memory.k, hops=self.memory.hops, namespace=self.namespace)

    def reply(self, text: str) -> None:
        """Reply to one message and store the turn."""
        results = self.recall(text)
        if self.show_recall:
            hops = self.memory.hops if self.memory.hops is not None else self.core.config.hops
            print("\n".join(format_recall(results, self.core, self.memory.k, hops)))

        # Without a model, the reply is the recall, and only the user's line is stored.
        if self.chain is None:
            print(f"nuonuo> {recall_reply(results, self.core)}")
            self.memory.save_context({"input": text}, {})
            return

        sys.stdout.write("nuonuo> ")
        sys.stdout.flush()
        printer = TokenPrinter()
        try:
            output = self.chain.invoke({"input": text}, config={"callbacks": [printer, *self.callbacks]})
        except NuoNuoError:
            # The memory failed, not the model: going on could lose more turns.
            raise
        except Exception as error:  # a model or its server can fail in many ways; the chat goes on
            print(f"\nerror: the model did not reply ({type(error).__name__}: {error}); "
                  "this turn was not stored", file=sys.stderr)
            return
        print("" if printer.printed else output["response"])

    # ------------------------------------------------------------ commands

    def run_command(self, line: str) -> bool:
        """Run a ``/command`` line; return ``False`` when the chat should end."""
        command, _, argument = line.partition(" ")
        argument = argument.strip()
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            print(HELP)
        elif command == "/memories":
            self.list_memories(argument)
        elif command == "/forget":
            self.forget(argument)
        else:
            print(f"unknown command {command!r}; type /help for the list")
        return True

    def list_memories(self, argument: str) -> None:
        records = self.core.list(self.namespace)
        if argument == "all":
            shown = records
        elif argument == "":
            shown = records[-MEMORIES_SHOWN:]
        elif argument.isdigit() and int(argument) > 0:
            shown = records[-int(argument):]
        else:
            print(f"invalid /memories argument {argument!r}: expected a positive number or 'all'")
            return
        if not records:
            print(f"No memories stored for user {self.namespace[0]!r} yet.")
            return
        hidden = len(records) - len(shown)
        header = f"{len(records)} memories of user {self.namespace[0]!r}, most recent last"
        print(header + (f" ({hidden} older not shown; /memories all lists them):" if hidden else ":"))
        for record in shown:
            print(format_record(record))

    def forget(self, argument: str) -> None:
        if not argument:
            print("usage: /forget ID | /forget TEXT | /forget all   (/help explains them)")
            return
        records = self.core.list(self.namespace)
        if argument == "all":
            self.forget_all(len(records))
            return

        # An id prefix first, then the text.
        if len(argument) >= MIN_ID_PREFIX:
            by_id = [r for r in records if r.id.startswith(argument)]
            if len(by_id) > 1:
                print(f"the id prefix {argument!r} matches {len(by_id)} memories; type more of the id:")
                for record in by_id:
                    print(format_record(record))
                return
            if by_id:
                self.delete(by_id)
                return
        needle = argument.casefold()
        by_text = [r for r in records if needle in r.text.casefold()]
        if not by_text:
            print(f"No memory has an id starting with or a text containing {argument!r}; "
                  "/memories lists them with their ids.")
            return
        if len(by_text) > 1:
            print(f"{len(by_text)} memories contain {argument!r}:")
            for record in by_text:
                print(format_record(record))
            if not self.confirm(f"Forget these {len(by_text)} memories?"):
                return
        self.delete(by_text)

    def forget_all(self, count: int) -> None:
        if count == 0:
            print(f"No memories stored for user {self.namespace[0]!r}; nothing to forget.")
            return
        if not self.confirm(f"Forget all {count} memories of user {self.namespace[0]!r}? This cannot be undone."):
            return
        removed = self.core.delete_namespace(self.namespace)
        print(f"Forgot {removed} memories.")

    def confirm(self, question: str) -> bool:
        answer = self.reader.read(f"{question} Type 'yes' to confirm: ")
        if answer is not None and answer.strip().lower() == "yes":
            return True
        print("Nothing was forgotten.")
        return False

    def delete(self, records: list[MemoryRecord]) -> None:
        for record in records:
            self.core.delete(record.id)
            print(f"Forgot [{short_id(record.id)}] {record.text}")


# ---------------------------------------------------------------- command line


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 1")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected an integer >= 0")
    return int(text)


def user_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"invalid user {text!r}: expected a non-blank name")
    return text.strip()


def default_user() -> str:
    try:
        import getpass

        return getpass.getuser() or "default"
    except (ImportError, KeyError, OSError):
        return "default"


def default_chat_memory_path() -> Path:
    """``chat.db`` in the folder of the ``nuonuo`` command's memory file (``~/.local/share/nuonuo``)."""
    return default_memory_path().with_name(MEMORY_FILE_NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nuonuo chat" if __name__ == "nuonuo_chatbot" else None,
        description=__doc__.splitlines()[0],
        epilog="Type /help in the chat for its commands.",
    )
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument(
        "--model", default=os.environ.get("NUONUO_CHAT_MODEL", DEFAULT_MODEL), metavar="SPEC",
        help=f"chat model: ollama:NAME, hf:FOLDER or gguf:FILE (default: {DEFAULT_MODEL}, "
             "or the environment variable NUONUO_CHAT_MODEL)",
    )
    backend.add_argument("--no-llm", action="store_true",
                         help="use no model: each reply lists the memories recalled for the message, "
                              "and only your lines are stored")
    backend.add_argument("--fake-llm", action="store_true",
                         help=f"use a fake chat model that always replies {FAKE_REPLY!r} (for tests, "
                              "with --record-prompts)")

    parser.add_argument("--memory", type=Path, default=None, metavar="FILE",
                        help=f"memory file (default: {default_chat_memory_path()})")
    parser.add_argument("--user", type=user_name, default=None, metavar="NAME",
                        help="whose memories to use; each user has a namespace of their own in the "
                             "memory file (default: your login name)")
    parser.add_argument("--session", default=None, metavar="ID",
                        help="conversation id; turns of one session are linked in order (default: a new "
                             "id for every run, from the start time)")
    parser.add_argument("--show-recall", action="store_true",
                        help="print the memories recalled for each message and the association path "
                             "that reached each one")

    parser.add_argument("-k", type=positive_int, default=DEFAULT_K, metavar="N",
                        help=f"memories recalled per message (default: {DEFAULT_K})")
    parser.add_argument("--hops", type=positive_int, default=DEFAULT_HOPS, metavar="N",
                        help=f"hops of recall: 1 finds memories by their text alone, 2 also follows their "
                             f"associations one step (default: {DEFAULT_HOPS})")
    parser.add_argument("--recent-turns", type=non_negative_int, default=DEFAULT_RECENT_TURNS, metavar="N",
                        help=f"latest turns of this session added to the prompt verbatim "
                             f"(default: {DEFAULT_RECENT_TURNS})")
    parser.add_argument("--max-tokens", type=positive_int, default=DEFAULT_MAX_TOKENS, metavar="N",
                        help=f"maximum tokens per reply (default: {DEFAULT_MAX_TOKENS})")

    parser.add_argument("--ollama-url", default=DEFAULT_OLLAMA_URL, metavar="URL",
                        help=f"address of the Ollama server (default: {DEFAULT_OLLAMA_URL})")
    parser.add_argument("--record-prompts", type=Path, default=None, metavar="FILE",
                        help="append every prompt sent to the chat model to FILE, one JSON object a line")
    parser.add_argument("--hashing", action="store_true",
                        help="embed with the model-free HashingEmbedder instead of all-MiniLM-L6-v2 "
                             "(for tests; a memory file keeps the embedder it was made with)")
    return parser


def model_description(args: argparse.Namespace) -> str:
    if args.no_llm:
        return "no model (replies list the recalled memories)"
    if args.fake_llm:
        return f"fake chat model (always replies {FAKE_REPLY!r})"
    return args.model


def build_chain(model: BaseChatModel, memory: NuoNuoMemory) -> ConversationChain:
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM_PROMPT), ("human", "{input}")])
    # ConversationChain is deprecated in LangChain in favour of agents, but it is
    # still the usual home of chain memories such as NuoNuoMemory.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*ConversationChain.*deprecated")
        return ConversationChain(llm=model, memory=memory, prompt=prompt)


def main(argv: list[str] | None = None) -> int:
    """Run the chatbot with command-line arguments ``argv``; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.record_prompts is not None and args.no_llm:
        parser.error("--record-prompts records what a chat model is sent, so it needs a model; drop --no-llm")

    # The model comes first: when it is missing, nothing else has to load.
    model: BaseChatModel | None = None
    if args.fake_llm:
        model = FakeListChatModel(responses=[FAKE_REPLY])
    elif not args.no_llm:
        try:
            backend, target = parse_model_spec(args.model)
        except ValueError as error:
            parser.error(str(error))
        try:
            model = load_chat_model(backend, target, max_tokens=args.max_tokens, ollama_url=args.ollama_url)
        except ModelUnavailableError as error:
            print(f"error: {error}\n\n{GEMMA_SETUP}", file=sys.stderr)
            return 1

    # The embedding model is packaged, so its loading bars tell nothing.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    path = (args.memory or default_chat_memory_path()).expanduser()
    user = args.user or default_user()
    session = args.session or f"chat-{datetime.now().isoformat(timespec='seconds')}"
    try:
        memory = NuoNuoMemory(
            path=str(path), embedder=HashingEmbedder() if args.hashing else None,
            namespace=(user,), session_id=session, k=args.k, hops=args.hops,
            recent_turns=args.recent_turns, human_prefix="User", ai_prefix="Assistant",
        )
    except NuoNuoError as error:
        print(f"error: cannot open the memory file {path}: {error}", file=sys.stderr)
        return 1

    core = memory.memory
    assert core is not None  # NuoNuoMemory opens it when built
    try:
        print(f"NuoNuo chat with {model_description(args)}")
        print(f"memory: {path}, user {user!r}, {core.count((user,))} memories stored. Type /help for commands.")
        callbacks = [PromptRecorder(args.record_prompts)] if args.record_prompts else []
        chain = None if model is None else build_chain(model, memory)
        chat = Chat(memory, chain, LineReader(), show_recall=args.show_recall, callbacks=callbacks)
        return chat.run()
    except NuoNuoError as error:
        print(f"error: the memory file {path} failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print()
        return 130
    except BrokenPipeError:
        # The reader of the output has gone (a pipe into head, for example). Point
        # stdout at os.devnull so that flushing it at exit raises nothing more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    finally:
        core.close()


if __name__ == "__main__":
    sys.exit(main())
