"""aiohttp adapters: thin handlers that parse, ask the domain, and render."""
