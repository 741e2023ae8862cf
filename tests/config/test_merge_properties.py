"""Properties of the `-f a -f b` merge over generated services (hypothesis)."""

import yaml
from hypothesis import given, settings, strategies as st

from supervisor.config.merge import merge_all, merge_files
from supervisor.config.source import locate, parse_yaml

names = st.sampled_from(["web", "db", "cache"])
words = st.text(alphabet="abcdefgh", min_size=1, max_size=6)
env_keys = st.text(alphabet="ABCDEF_", min_size=1, max_size=4).filter(lambda k: not k.startswith("_"))
ports = st.integers(1, 65535).map(str) | st.tuples(st.integers(1024, 65535), st.integers(1, 65535)).map(
    lambda p: f"{p[0]}:{p[1]}")
volumes = st.tuples(st.sampled_from(["data", "logs", "./src"]), st.sampled_from(["/a", "/b", "/c"])).map(
    lambda v: f"{v[0]}:{v[1]}")

service = st.fixed_dictionaries({}, optional={
    "image": words,
    "user": words,
    "command": st.lists(words, min_size=1, max_size=3),
    "environment": st.dictionaries(env_keys, words, max_size=3),
    "labels": st.dictionaries(words, words, max_size=3),
    "ports": st.lists(ports, max_size=3),
    "volumes": st.lists(volumes, max_size=3),
    "dns": st.lists(st.sampled_from(["1.1.1.1", "8.8.8.8", "9.9.9.9"]), max_size=3, unique=True),
    "cap_add": st.lists(st.sampled_from(["NET_ADMIN", "SYS_TIME", "CHOWN"]), max_size=3, unique=True),
    "healthcheck": st.fixed_dictionaries({"test": st.lists(words, min_size=1, max_size=2).map(lambda t: ["CMD", *t])}),
})
stacks = st.dictionaries(names, service, min_size=1, max_size=3).map(lambda s: {"services": s})


def tree(doc: dict, file: str):
    return parse_yaml(yaml.safe_dump(doc), file)


@settings(max_examples=150, deadline=None)
@given(stacks)
def test_merging_a_file_with_itself_changes_nothing(doc):
    t = tree(doc, "a.yaml")
    assert merge_files(t, tree(doc, "b.yaml")) == merge_all([t])


@settings(max_examples=150, deadline=None)
@given(stacks)
def test_an_empty_override_changes_nothing(doc):
    t = tree(doc, "a.yaml")
    assert merge_files(t, tree({"services": {}}, "b.yaml")) == merge_all([t])


@settings(max_examples=150, deadline=None)
@given(stacks, stacks)
def test_the_override_wins_for_single_values_and_keeps_every_key(base, over):
    merged = merge_files(tree(base, "a.yaml"), tree(over, "b.yaml"))
    assert set(merged["services"]) == set(base["services"]) | set(over["services"])
    for name, svc in over["services"].items():
        for path in (("image",), ("user",), ("command",), ("healthcheck", "test")):
            value, got = svc, merged["services"][name]
            for part in path:
                value, got = value.get(part, {}), got.get(part, {})
            if value:
                assert got == value
                # and the merged value points at the file that supplied it
                assert locate(merged, ("services", name, *path)).file == "b.yaml"
        for key in ("environment", "labels"):
            combined = {**base["services"].get(name, {}).get(key, {}), **svc.get(key, {})}
            assert dict(merged["services"][name].get(key, {})) == combined
        for key in ("dns", "cap_add"):
            values = base["services"].get(name, {}).get(key, []) + svc.get(key, [])
            assert set(merged["services"][name].get(key, [])) == set(values)


@settings(max_examples=100, deadline=None)
@given(stacks, stacks)
def test_volumes_are_unique_by_target_the_override_winning(base, over):
    merged = merge_files(tree(base, "a.yaml"), tree(over, "b.yaml"))
    for name, svc in merged["services"].items():
        targets = [v.split(":")[1] for v in svc.get("volumes", [])]
        assert len(targets) == len(set(targets))
        for v in over["services"].get(name, {}).get("volumes", []):
            last = [w for w in over["services"][name]["volumes"] if w.split(":")[1] == v.split(":")[1]][-1]
            assert last in svc["volumes"]
