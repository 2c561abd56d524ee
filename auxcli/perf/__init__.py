"""Throughput measurements that import only torch, torchvision, numpy and PIL (no pydantic, MLflow, DVC).

They back `auxcli bench`, `auxcli plan --estimate` and `benchmarks/gpu.sh`, and run on a GPU machine that
has nothing but torch: `python -m auxcli.perf --help`.
"""
