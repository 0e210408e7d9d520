"""The Triton wire format: every tensor's name and dtype (``tensors``), arrays to and from the
package's dataclasses (``arrays``), and raw gRPC messages (``grpc``). Nothing here imports Triton's
Python backend."""
