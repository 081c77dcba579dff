"""Classify digits or images over HTTP with an SLO:  python client/http_example.py --slo-ms 20 [--model M --image F]"""

from classify import run

if __name__ == "__main__":
    run("http")
