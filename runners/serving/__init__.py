"""Loading a variant and serving it: the one loader (variant_loader.py) that verification,
profiling, inplace swap-in and both servers use, the Triton Python-backend model and the PyTriton server."""
