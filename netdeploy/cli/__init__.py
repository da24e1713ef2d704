"""The ``netdeploy`` command line: ``main`` parses and dispatches; one module per command group,
a leaf ``common`` for what they share. Thin over the domain and the server's API."""
