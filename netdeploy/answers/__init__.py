"""Answer files: render per-node templates (jinja2, StrictUndefined) and validate the result.

Pure: no sockets, no store. ``render`` builds the variables and renders; ``validate`` checks the
rendered text (``sysprep`` for sysprep.inf, ``formats`` for the others). The HTTP route, the CLI
``render`` command and ``netdeploy check`` all go through :func:`render.render_answer`, so what
`check` passes is exactly what a node is served.
"""
