"""OpenAI-compatible protocol models (``protocol``) and DB-independent serving logic (``serving``)."""
