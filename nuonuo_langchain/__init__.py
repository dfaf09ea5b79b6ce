"""LangChain and LangGraph adapters for NuoNuo."""
