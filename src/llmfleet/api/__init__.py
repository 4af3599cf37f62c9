"""OpenAI API request/response types and the mapping of errors to OpenAI-style JSON."""
