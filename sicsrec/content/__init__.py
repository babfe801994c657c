"""Items' text and images: encoders, LLM-judged pair construction."""
