"""The optional compiled row path of capture (cdc/_rowpath.pyx).

Built with the machine's C compiler when there is one; ``optional=True`` lets the install go on
without it, and capture then runs the pure-Python reference path (see cdc/rowpath.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cdc._rowpath", ["cdc/_rowpath.pyx"], optional=True)])
