"""User and group resolution from the container's own passwd and group files."""

import pytest

from supervisor.runtime.users import ExecUser, UserError, resolve_user


@pytest.fixture
def files(tmp_path):
    passwd = tmp_path / "passwd"
    group = tmp_path / "group"
    passwd.write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n")
    group.write_text("root:x:0:\nstaff:x:50:app,other\napp:x:1000:\nwheel:x:10:other\n")
    return str(passwd), str(group)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, ExecUser(0, 0, (0,), "/root", "root")),
        ("app", ExecUser(1000, 1000, (1000, 50), "/home/app", "app")),
        ("1000", ExecUser(1000, 1000, (1000, 50), "/home/app", "app")),
        ("app:staff", ExecUser(1000, 50, (50,), "/home/app", "app")),
        ("app:10", ExecUser(1000, 10, (10,), "/home/app", "app")),
        ("4242", ExecUser(4242, 0, (0,), "/", None)),  # numeric, not in passwd: fine
        ("4242:4343", ExecUser(4242, 4343, (4343,), "/", None)),
    ],
)
def test_resolve(files, spec, expected):
    assert resolve_user(spec, *files) == expected


@pytest.mark.parametrize(("spec", "message"), [
    ("ghost", "unable to find user ghost"),
    ("app:ghosts", "unable to find group ghosts"),
    (":1", "invalid user"),
])
def test_unknown_names_fail(files, spec, message):
    with pytest.raises(UserError, match=message):
        resolve_user(spec, *files)


def test_missing_files_allow_numeric_ids(tmp_path):
    assert resolve_user("7:8", str(tmp_path / "no"), str(tmp_path / "no")) == ExecUser(7, 8, (8,), "/", None)
