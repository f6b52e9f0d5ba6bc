"""An offline, deterministic, OpenAI-compatible LLM server for development, tests and benchmarks.

It imports nothing from ``gateway``. ``create_app`` is the uvicorn factory; ``respond`` is the
scripted "model" (see :mod:`llm_stub.scripts` for the role markers and keyword rules).
"""

from llm_stub.app import create_app
from llm_stub.scripts import MARKERS, Reply, respond
from llm_stub.settings import Knobs, StubSettings

__all__ = ["MARKERS", "Knobs", "Reply", "StubSettings", "create_app", "respond"]
