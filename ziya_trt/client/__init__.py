"""The thin client: Ziya prompts, streaming, cancellation and typed errors over gRPC or HTTP."""

from ._client import AsyncChatStream, AsyncZiyaClient, ChatStream, ZiyaClient
from ._core import ChatResult

__all__ = ["AsyncChatStream", "AsyncZiyaClient", "ChatResult", "ChatStream", "ZiyaClient"]
