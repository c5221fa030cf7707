"""One module per ``ddsearch`` command: its arguments (``add_parser``) and its handler (``run``)."""
