"""Built-in probe inputs for checking a quantized model against its unquantized self."""

from __future__ import annotations

PROBE_TEXTS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "I absolutely loved this film; the acting was wonderful.",
    "This was the worst customer service I have ever had.",
    "Ray Serve batches requests so the accelerator stays busy.",
    "Quantization stores weights in fewer bits to save memory.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman.",
    "def add(a, b):\n    return a + b",
)
