"""Database settings as the statements that set them on the target (as pg_dump writes them)."""

from __future__ import annotations

from migrate.db.dbsettings import Setting, split_list, statement


def test_list_settings_are_split_as_the_server_stored_them() -> None:
    assert split_list("app, public") == ["app", "public"]
    assert split_list('"$user", public') == ["$user", "public"]
    assert split_list('"My ""odd"" schema",x') == ['My "odd" schema', "x"]
    assert split_list('""') == [""]
    assert split_list("a b") is None and split_list('"open') is None


def test_statements() -> None:
    assert statement(Setting("search_path", '"$user", app'), "t db") == \
        "ALTER DATABASE \"t db\" SET \"search_path\" TO '$user', 'app'"
    # Not a list: one literal, commas and all.
    assert statement(Setting("DateStyle", "ISO, DMY"), "t") == "ALTER DATABASE \"t\" SET \"DateStyle\" TO 'ISO, DMY'"
    assert statement(Setting("work_mem", "64MB", role="app"), "t") == \
        "ALTER ROLE \"app\" IN DATABASE \"t\" SET \"work_mem\" TO '64MB'"
    assert statement(Setting("app.note", "it's"), "t") == "ALTER DATABASE \"t\" SET \"app.note\" TO 'it''s'"
