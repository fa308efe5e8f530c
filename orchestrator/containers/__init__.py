"""Docker and what runs in it: the one module of Docker calls (engine), the images (which a
run uses, and building them) and their bake file, GPUs as Docker sees them, and `nav-orch doctor`."""
