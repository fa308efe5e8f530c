"""One runner per toolchain (torch, tensorflow, jax, onnx, tensorrt, python): each module's
`handlers()` runs the jobs of its formats; the other modules here are the decisions they share."""
