"""Classify a few held-out digits over GRPC with an SLO:  .venv/bin/python client/grpc_example.py --slo-ms 20"""

from superserve_client.example import run

if __name__ == "__main__":
    run("grpc")
