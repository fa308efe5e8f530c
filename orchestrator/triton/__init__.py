"""The Triton stage: the model repository, the server, perf_analyzer, the TensorRT version
guard, and `nav-orch serve`."""
