"""LlamaIndex adapters for NuoNuo."""
