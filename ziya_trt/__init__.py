"""ziya-trt: serve Ziya2-13B-Chat with TensorRT-LLM and Triton, with a thin client and a perf suite.

The tree is the map: ``text`` (chat format, tokenizer, detokeniser, sampling: no I/O), ``engine``
(engines behind the ``tensorrt_llm`` interface), ``wire`` (Triton tensors and messages), ``serving``
(front door, engine link, launcher), ``client``, ``cli``, ``fixtures``; ``errors`` and ``finish`` are
the vocabulary every layer shares.
"""

from .errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InvalidRequestError,
    PromptTooLongError,
    ServerError,
    ServerOverloadedError,
    ServerShuttingDownError,
    TokenizerError,
    ZiyaError,
)
from .finish import FinishReason
from .text.detok import IncrementalDetokenizer, StopMatcher, TextStream, TokenTable
from .text.prompt import Conversation, Message, Role, build_prompt, get_template
from .text.sampling import SamplingParams
from .text.tokenizer import ZiyaTokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "Conversation",
    "FinishReason",
    "IncrementalDetokenizer",
    "InvalidRequestError",
    "Message",
    "PromptTooLongError",
    "Role",
    "SamplingParams",
    "ServerError",
    "ServerOverloadedError",
    "ServerShuttingDownError",
    "StopMatcher",
    "TextStream",
    "TokenTable",
    "TokenizerError",
    "ZiyaError",
    "ZiyaTokenizer",
    "build_prompt",
    "get_template",
    "load_tokenizer",
]


def __getattr__(name: str):
    if name in ("ConnectionError", "TimeoutError"):  # the names of 0.1, deprecated (they shadow built-ins)
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
