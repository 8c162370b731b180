"""harness: benchmark BERT-family fine-tuning on sequence classification.

Plugins import the marker from here::

    from harness import hookimpl
"""

from harness.hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
