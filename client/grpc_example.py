"""Classify a few digits over gRPC with an SLO:  python client/grpc_example.py --slo-ms 20"""

from digits_client import run

if __name__ == "__main__":
    run("grpc")
