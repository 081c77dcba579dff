"""Classify digits or images over gRPC with an SLO:  python client/grpc_example.py --slo-ms 20 [--model M --image F]"""

from classify import run

if __name__ == "__main__":
    run("grpc")
