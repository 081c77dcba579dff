"""The serving core behind the Triton model: config, request checks, dispatcher, engine, metrics."""
