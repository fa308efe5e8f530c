"""Docker and what runs in it: the one module of Docker calls (engine), the images and their
bake file, GPUs as Docker sees them, and `nav-orch doctor`."""
