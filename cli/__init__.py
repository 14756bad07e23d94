"""The anoncard command line: a thin click layer over :mod:`anoncard.service`."""
