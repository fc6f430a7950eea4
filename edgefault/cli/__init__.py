"""The ``edgefault`` command line: a thin click layer over the stage packages."""
