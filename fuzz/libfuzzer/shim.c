// Nothing to compile: the module exists for its header.
