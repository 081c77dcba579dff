"""Classify a few held-out digits over HTTP with an SLO:  .venv/bin/python client/http_example.py --slo-ms 20"""

from superserve_client.example import run

if __name__ == "__main__":
    run("http")
