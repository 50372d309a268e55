"""Language models: fair slots, token accounting and the generation service behind the
OpenAI-compatible API (``api/openai.py``)."""
