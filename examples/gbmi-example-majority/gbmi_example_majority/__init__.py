"""A template gbmi plugin: copy this folder to start your own task."""
