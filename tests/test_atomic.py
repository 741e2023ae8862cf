"""supervisor.atomic: a record written whole, and read back with a missing or damaged one as {}."""

from __future__ import annotations

from supervisor.atomic import read_record, write_json


def test_a_record_reads_back_and_a_missing_or_damaged_one_is_empty(tmp_path):
    said: list[str] = []
    path = str(tmp_path / "run.json")
    assert read_record(path, said.append) == {} and said == []  # none yet: nothing to say
    write_json(path, {"cgroups": ["p/web.1"]})
    assert read_record(path, said.append) == {"cgroups": ["p/web.1"]} and said == []
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left
    (tmp_path / "run.json").write_text('{"cgroups": [')
    assert read_record(path, said.append) == {} and len(said) == 1
    (tmp_path / "run.json").write_text('["p/web.1"]')  # edited by hand into a list
    assert read_record(path, said.append) == {} and said[1] == "not a JSON object but list"
