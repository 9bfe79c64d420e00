"""Per model family: the chat-template arguments and the split of a completion into reasoning and answer."""

from lowbit.chat.base import ChatFormat, chat_formats, get_chat_format, split_completion

__all__ = ["ChatFormat", "chat_formats", "get_chat_format", "split_completion"]
