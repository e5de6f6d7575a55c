"""cloudpos-syncer: keeps a relational database in step with CloudPOS point-of-sale data."""

__version__ = "0.1.0"
