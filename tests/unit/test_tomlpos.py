from netdeploy.tomlpos import line_of

SOURCE = """\
[server]
bind = "0.0.0.0"

[clusters.sql]
image = "w"
[clusters.sql.vars]
domain = "x"

[[nodes]]
mac = "a"

[[nodes]]
hostname = "b"
mac = "c"
"""


def test_keys_in_tables_and_arrays_of_tables():
    assert line_of(SOURCE, ("server", "bind")) == 2
    assert line_of(SOURCE, ("clusters", "sql", "image")) == 5
    assert line_of(SOURCE, ("clusters", "sql", "vars", "domain")) == 7
    assert line_of(SOURCE, ("nodes", 0, "mac")) == 10
    assert line_of(SOURCE, ("nodes", 1, "mac")) == 14


def test_missing_key_falls_back_to_its_table():
    assert line_of(SOURCE, ("nodes", 0, "hostname")) == 9
    assert line_of(SOURCE, ("clusters", "sql", "first_node")) == 4
    assert line_of(SOURCE, ("nowhere",)) is None
