"""Built-in backends. Each module imports its runtime only when a backend is used."""
