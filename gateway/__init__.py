"""Agent Stream Gateway: durable task streams for LLM agents over SSE."""
