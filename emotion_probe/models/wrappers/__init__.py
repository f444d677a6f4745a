"""Layers around any provider: call accounting and retry (core), the response cache, batching, and the stack that puts them together."""
