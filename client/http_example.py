"""Classify a few digits over HTTP with an SLO:  python client/http_example.py --slo-ms 20"""

from digits_client import run

if __name__ == "__main__":
    run("http")
