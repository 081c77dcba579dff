"""SuperServe on Triton: serve every SubNet of a weight-shared SuperNet, chosen per batch by SlackFit."""

__version__ = "0.1.0"
