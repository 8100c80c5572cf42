"""The ``durapod`` command."""
