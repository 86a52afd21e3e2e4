"""Shared machinery for the compact-BERT reproductions.

Paddle 2.6.2 exports zlib symbols of its own: ``zlib`` must be loaded before
``paddle`` or the first zlib user (scipy, gzip, aiohttp) crashes the process.
Every entry point imports ``common`` first, so this is the one place it happens.
"""
import warnings
import zlib  # noqa: F401  (must precede any paddle import)

# Import-time noise from the pinned stack (jieba's pkg_resources, setuptools' distutils shim).
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")
