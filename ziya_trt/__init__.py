"""ziya-trt: serve Ziya2-13B-Chat with TensorRT-LLM and Triton, with a thin client and a perf suite."""

from .detok import FinishReason, IncrementalDetokenizer, StopMatcher, TextStream, TokenTable
from .errors import (
    ConnectionError,
    InvalidRequestError,
    PromptTooLongError,
    ServerError,
    ServerOverloadedError,
    TimeoutError,
    TokenizerError,
    ZiyaError,
)
from .prompt import Conversation, Message, Role, build_prompt, get_template
from .sampling import SamplingParams
from .tokenizer import ZiyaTokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "ConnectionError",
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
    "StopMatcher",
    "TextStream",
    "TimeoutError",
    "TokenTable",
    "TokenizerError",
    "ZiyaError",
    "ZiyaTokenizer",
    "build_prompt",
    "get_template",
    "load_tokenizer",
]
