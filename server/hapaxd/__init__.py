"""hapaxd: the Hapax gRPC LLM gateway server."""

__version__ = "0.1.0"
