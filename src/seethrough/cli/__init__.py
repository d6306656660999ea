"""The ``seethrough`` command line, built on the public API only."""
