"""Run a sentence-transformers model with ONNX Runtime on the CPU.

The transformer is exported once, locally, from the model already on disk (no
download), into a cache folder; pooling and normalisation run in NumPy. On a
small CPU this encodes a short query several times faster than PyTorch, because
ONNX Runtime fuses the attention blocks and has far less per-call overhead.

Needs the ``fast`` extra: ``onnxruntime``, ``onnx`` and ``onnxscript``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nuonuo_core.errors import ConfigError

logger = logging.getLogger(__name__)

_EXPORT_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """``$NUONUO_CACHE`` when set, else ``$XDG_CACHE_HOME/nuonuo``, else ``~/.cache/nuonuo``."""
    env = os.environ.get("NUONUO_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "nuonuo"


def _fingerprint(model_dir: Path) -> str:
    """Hash of the model's weight and configuration files, so a changed model is exported again."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".bin", ".txt"):
            digest.update(path.name.encode())
            digest.update(str(path.stat().st_size).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


class OnnxEncoder:
    """Encodes texts with an exported transformer, mean or CLS pooling, and L2 normalisation.

    Use :meth:`for_sentence_transformer` to build one from a loaded model.
    """

    def __init__(self, onnx_path: Path, tokenizer: Any, max_tokens: int, pooling: str, normalize: bool) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise ConfigError(
                "the ONNX backend needs onnxruntime; install it with: pip install 'nuonuo[fast]'"
            ) from error
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = max(1, os.cpu_count() or 1)
        # Pool threads spin between the operators of a run, which keeps a short
        # query fast, but stop when the run ends, so that they leave the cores to
        # the recall that follows the query's embedding.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = onnxruntime.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.pooling = pooling
        self.normalize = normalize

    @classmethod
    def for_sentence_transformer(
        cls,
        model: Any,
        model_path: str,
        cache_dir: str | os.PathLike[str] | None = None,
        quantize: bool = False,
    ) -> OnnxEncoder:
        """Export ``model``'s transformer once and return an encoder that runs it.

        Args:
            model: A loaded ``SentenceTransformer`` whose modules are a
                transformer, a mean or CLS pooling, and optionally a normalisation.
            model_path: Folder the model was loaded from; its files name the export.
            cache_dir: Folder of exports; :func:`default_cache_dir` when ``None``.
            quantize: Run a copy whose weights are quantised to 8 bits.
        """
        modules = list(model)
        transformer = modules[0]
        pooling = _pooling_mode(modules)
        normalize = any(type(m).__name__ == "Normalize" for m in modules)
        source = Path(model_path)
        if not source.is_dir():
            raise ConfigError(f"the ONNX backend needs a model folder on disk, got {model_path!r}")
        target = Path(cache_dir) if cache_dir else default_cache_dir()
        onnx_path = target / "onnx" / f"{source.name}-{_fingerprint(source)}" / "model.onnx"
        with _EXPORT_LOCK:
            if not onnx_path.exists():
                _export(transformer.auto_model, model.tokenizer, onnx_path)
            if quantize:
                # One scale per output channel. On 800 LoCoMo turns the mean cosine to the
                # float32 vectors rose from 0.953 (one scale per matrix) to 0.991, measured once.
                quantized = onnx_path.with_name("model.int8-per-channel.onnx")
                if not quantized.exists():
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    partial = quantized.with_name("model.int8-per-channel.partial.onnx")
                    quantize_dynamic(str(onnx_path), str(partial), weight_type=QuantType.QInt8, per_channel=True)
                    os.replace(partial, quantized)
                onnx_path = quantized
        return cls(onnx_path, model.tokenizer, int(model.max_seq_length), pooling, normalize)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Embed texts. Returns shape ``(len(texts), dim)``, float32.

        Texts are sorted by length and batched, so each batch pads little.
        """
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = range(0, len(texts), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Embedding", unit="batch")
        outputs: list[np.ndarray] = []
        for start in batches:
            chunk = [texts[i] for i in order[start : start + batch_size]]
            outputs.append(self._encode_batch(chunk))
        embeddings = np.concatenate(outputs)
        result = np.empty_like(embeddings)
        result[order] = embeddings
        return result

    def hidden_states(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Run one padded batch and return its token vectors, mask and character offsets.

        Shape:
            return: ``(batch, tokens, dim)`` float32, then ``(batch, tokens)``
            int64 with 1 for a real token, then ``(batch, tokens, 2)`` int64: the
            start and end character of each token in its text. Special tokens
            start where they end.
        """
        hidden, mask, offsets = self._run(texts, offsets=True)
        assert offsets is not None
        return hidden, mask, offsets

    def _run(self, texts: list[str], offsets: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Tokenize one padded batch and run the model: token vectors, mask, and
        character offsets when ``offsets`` is set (they need a fast tokenizer)."""
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens,
            return_offsets_mapping=offsets, return_tensors="np",
        )
        feed = {name: np.asarray(encoded[name], dtype=np.int64) for name in self.input_names if name in encoded}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        hidden = self.session.run(None, feed)[0]
        spans = np.asarray(encoded["offset_mapping"], dtype=np.int64) if offsets else None
        return hidden, feed["attention_mask"], spans

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        hidden, attention_mask, _ = self._run(texts)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask[:, :, None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        pooled = pooled.astype(np.float32)
        if self.normalize:
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return pooled


def _pooling_mode(modules: list[Any]) -> str:
    for module in modules:
        if type(module).__name__ == "Pooling":
            config = module.get_config_dict()
            # sentence-transformers 5 and later name the mode; older versions set flags.
            mode = config.get("pooling_mode")
            if mode in ("mean", "cls"):
                return mode
            if config.get("pooling_mode_mean_tokens"):
                return "mean"
            if config.get("pooling_mode_cls_token"):
                return "cls"
            raise ConfigError(
                f"the ONNX backend supports mean and CLS pooling, not {config}; use backend='torch'"
            )
    raise ConfigError("the model has no Pooling module; use backend='torch'")


def _export(auto_model: Any, tokenizer: Any, onnx_path: Path) -> None:
    """Export a Hugging Face encoder to ONNX with dynamic batch and sequence axes."""
    import torch

    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError as error:
        raise ConfigError(
            "exporting to ONNX needs onnx and onnxscript; install them with: pip install 'nuonuo[fast]'"
        ) from error

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            return self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    logger.info("Exporting the embedding model to %s (once)", onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Encoder(auto_model).eval()
    # A padded batch of two lengths, so that the traced graph keeps the
    # attention-mask path instead of specialising to an all-ones mask.
    example = tokenizer(
        ["a short example", "a longer example sentence for tracing the encoder graph"],
        padding=True,
        return_tensors="pt",
    )
    names = ["input_ids", "attention_mask", "token_type_ids"]
    inputs = tuple(example.get(name, torch.zeros_like(example["input_ids"])) for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    partial = onnx_path.with_suffix(".partial.onnx")
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            inputs,
            str(partial),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            dynamo=True,
            external_data=False,
        )
    os.replace(partial, onnx_path)
