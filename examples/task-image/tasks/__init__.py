"""The example task image's tasks: the package ``tasks`` under ``/app`` in the image."""
