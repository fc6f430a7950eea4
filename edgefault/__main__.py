"""``python -m edgefault``: the same command line as the ``edgefault`` script."""

from edgefault.cli.main import main

if __name__ == "__main__":
    main()
