import json
import os

import pytest

from supervisor.supervise.project import ProjectBusy, ProjectFiles


@pytest.fixture
def env(tmp_path):
    return {"PYSUP_STATE_DIR": str(tmp_path / "state"), "PYSUP_RUNTIME_DIR": str(tmp_path / "run")}


def test_second_lock_refuses_with_the_pid(env):
    a = ProjectFiles("shop", env)
    a.lock()
    b = ProjectFiles("shop", env)
    with pytest.raises(ProjectBusy, match=rf"project 'shop' is already up \(pysup pid {os.getpid()}\)"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()
    assert not os.path.exists(b.runtime_dir)


class FakeManager:
    def __init__(self, cgroups):
        self.cgroups = dict(cgroups)  # path -> pids
        self.removed = []

    def exists(self, path):
        return path in self.cgroups or any(p.startswith(path + "/") for p in self.cgroups)

    def children(self, path):
        return [p.split("/", 1)[1] for p in self.cgroups if p.startswith(path + "/")]

    def procs(self, path):
        return self.cgroups.get(path, [])

    def remove(self, path, timeout=10.0):
        self.removed.append(path)
        for p in [p for p in self.cgroups if p == path or p.startswith(path + "/")]:
            del self.cgroups[p]


def test_leftovers_from_the_record_are_removed_and_listed(env, tmp_path):
    old = ProjectFiles("shop", env)
    old.lock()
    old.start_record()
    os.makedirs(os.path.join(old.containers_dir, "shop-web-1"))
    secret = tmp_path / "run" / "shop" / "secrets" / "secret-pw"
    secret.parent.mkdir(parents=True)
    secret.write_text("x")
    old.add("containers", "shop-web-1")
    old.add("cgroups", "shop/web.1")
    old.add("files", str(secret))
    os.close(old._lock_fd)  # "SIGKILLed": the lock goes with the process, the files stay
    old._lock_fd = None
    manager = FakeManager({"shop/web.1": [4242], "shop/db.1": []})
    new = ProjectFiles("shop", env)
    new.lock()
    removed = new.clean_leftovers(manager)
    assert removed[0] == "cgroup shop/web.1 (killed 1 process(es): [4242])"
    assert "cgroup shop/db.1" in removed  # not in the record, found under the project's cgroup
    assert any(r.startswith("container directory") for r in removed)
    assert f"file {secret}" in removed and not secret.exists()
    assert removed[-1].startswith("record ")
    assert not os.path.exists(new.record_path) and not manager.cgroups
    assert new.clean_leftovers(FakeManager({})) == []
    new.unlock()


def test_record_is_json_and_finish_removes_files(env, tmp_path):
    p = ProjectFiles("shop", env)
    p.start_record()
    f = tmp_path / "gen"
    f.write_text("x")
    p.add("files", str(f))
    p.add("cgroups", "shop/a.1")
    with open(p.record_path) as rec:
        assert json.load(rec)["cgroups"] == ["shop/a.1"]
    p.finish_record()
    assert not f.exists() and not os.path.exists(p.record_path)
