"""The launcher ↔ zygote messages: framing, versioning, fd passing, and the ContainerSpec payload."""

import os
import socket

import attrs
import pytest

from supervisor.runtime import protocol as P
from supervisor.runtime.spec import ContainerSpec, MountSpec, Rlimit, env_with_defaults, generated_resolv_conf


def test_roundtrip():
    data = P.encode(P.START, id="c1", spec={"a": 1})
    assert P.decode(data) == {"v": 1, "type": "start", "id": "c1", "spec": {"a": 1}}


@pytest.mark.parametrize(("data", "message"), [
    (b'{"v": 2, "type": "start"}', "protocol version 2"),
    (b'{"v": 1, "type": "dance"}', "unknown message type"),
    (b"[1]", "not an object"),
    (b"{nope", "malformed"),
])
def test_bad_messages(data, message):
    with pytest.raises(P.ProtocolError, match=message):
        P.decode(data)


def test_unknown_type_is_refused_on_encode():
    with pytest.raises(P.ProtocolError):
        P.encode("dance")


def test_message_with_fds_over_seqpacket():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    try:
        P.send(a, P.START, fds=[r, w], id="x")
        P.send(a, P.SHUTDOWN)
        msg, fds = P.recv(b)
        assert msg["type"] == "start" and msg["id"] == "x" and len(fds) == 2
        os.write(fds[1], b"hi")
        assert os.read(r, 2) == b"hi"
        for fd in fds:
            os.close(fd)
        assert P.recv(b) == ({"v": 1, "type": "shutdown"}, [])
        a.close()
        assert P.recv(b) is None  # EOF
    finally:
        for s in (a, b):
            s.close()
        os.close(r)
        os.close(w)


def test_spec_json_roundtrip():
    spec = ContainerSpec(
        id="pysup-test-1", rootfs="/r", argv=["sh", "-c", "true"], env={"A": "1"}, user="app:staff",
        mounts=[MountSpec(type="bind", source="/s", target="/t", read_only=True),
                MountSpec(type="tmpfs", target="/run", tmpfs_size=1024, options=["noexec"])],
        rlimits=[Rlimit(name="nofile", soft=10, hard=20)], capabilities=["CAP_KILL"],
        seccomp={"defaultAction": "SCMP_ACT_ALLOW"}, masked_paths=["/proc/kcore"], cgroup_procs=["/x/cgroup.procs"],
    )
    again = ContainerSpec.from_json(spec.to_json())
    assert again == spec
    assert hash(again.mounts) == hash(spec.mounts)


def test_environment_defaults():
    spec = ContainerSpec(id="abcdefabcdef0123", rootfs="/r", argv=["x"], env={"PATH": "/bin"})
    env = env_with_defaults(spec, "/home/app")
    assert env == {"PATH": "/bin", "HOSTNAME": "abcdefabcdef0123", "HOME": "/home/app"}


def test_resolv_conf_drops_loopback_servers(tmp_path):
    host = tmp_path / "resolv.conf"
    host.write_text("# x\nnameserver 127.0.0.53\nnameserver 9.9.9.9\nsearch lan\noptions edns0\n")
    assert generated_resolv_conf(host_file=str(host)) == "nameserver 9.9.9.9\nsearch lan\noptions edns0\n"
    assert generated_resolv_conf(("1.1.1.1",), ("a",), host_file=str(host)) == "nameserver 1.1.1.1\nsearch a\n"


# --- from_service ----------------------------------------------------------------------------------

from supervisor.config.model import Device, Mount, Service, ServiceExtras, Ulimit  # noqa: E402
from supervisor.runtime.spec import UnsupportedOption, from_service, parse_security_opt  # noqa: E402


def test_from_service_maps_the_compose_model():
    svc = Service(
        name="web", command=("-c", "echo hi"), entrypoint=("/bin/sh",), environment={"A": "1"}, working_dir="/srv",
        user="app", hostname="web1", read_only=True, cap_add=("NET_ADMIN",), cap_drop=("MKNOD",),
        security_opt=("no-new-privileges:false", "seccomp=unconfined"), network_mode="host",
        volumes=(Mount(type="bind", source="/data", target="/d", read_only=True),
                 Mount(type="tmpfs", target="/run", tmpfs_size=4096),
                 Mount(type="volume", source="cache", target="/c")),
        ulimits=(Ulimit(name="nofile", soft=1024, hard=2048),), dns=("9.9.9.9",), extra_hosts=(("db", "10.0.0.2"),),
        x=ServiceExtras(rootfs="/roots/web"),
    )
    spec = from_service(svc, id="pysup-test-web-1", volumes_dir="/vol", cgroup_procs=("/cg/cgroup.procs",))
    assert spec.argv == ("/bin/sh", "-c", "echo hi") and spec.rootfs == "/roots/web"
    assert spec.env == (("A", "1"),) and spec.cwd == "/srv" and spec.user == "app" and spec.read_only
    assert "CAP_NET_ADMIN" in spec.capabilities and "CAP_MKNOD" not in spec.capabilities
    assert spec.no_new_privs is False and spec.seccomp is None and spec.host_net and not spec.host_pid
    assert [m.type for m in spec.mounts] == ["bind", "tmpfs", "bind"] and spec.mounts[2].source == "/vol/cache"
    assert spec.rlimits == (Rlimit(name="nofile", soft=1024, hard=2048),)
    assert spec.resolv_conf == "nameserver 9.9.9.9\n" and "10.0.0.2\tdb" in spec.hosts
    assert spec.cgroup_procs == ("/cg/cgroup.procs",)


def test_from_service_init_and_sysctls():
    svc = Service(name="s", command=("true",), init=True, sysctls={"net/ipv4/ip_forward": "1", "kernel.shmmax": 4096},
                  x=ServiceExtras(rootfs="/r"))
    spec = from_service(svc, id="x")
    assert spec.init and spec.sysctls == (("net.ipv4.ip_forward", "1"), ("kernel.shmmax", "4096"))


@pytest.mark.parametrize(("kw", "message"), [
    (dict(image="pysup-test-absent"), r"services\.s: image pysup-test-absent:latest is not in the local store"),
    (dict(x=ServiceExtras(rootfs="/r"), devices=(Device(source="/dev/fuse", target="/dev/fuse"),)), "devices"),
    (dict(x=ServiceExtras(rootfs="/r"), sysctls={"kernel.panic": "1"}), "not a namespaced sysctl"),
    (dict(x=ServiceExtras(rootfs="/r"), sysctls={"net.ipv4.ip_forward": "1"}, network_mode="host"), "host's network"),
    (dict(x=ServiceExtras(rootfs="/r"), network_mode="container:db"), "network_mode"),  # service:: supervisor.net
    (dict(x=ServiceExtras(rootfs="/r"), security_opt=("systempaths=unconfined",)), "not supported"),
])
def test_from_service_refuses_what_it_cannot_do(kw, message):
    with pytest.raises(UnsupportedOption, match=message):
        from_service(Service(name="s", command=("true",), **kw), id="x")


def test_security_opt_forms(tmp_path):
    prof = tmp_path / "p.json"
    prof.write_text('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert parse_security_opt(()) == (True, "default")
    assert parse_security_opt(("no-new-privileges=false",)) == (False, "default")
    assert parse_security_opt(("no-new-privileges",)) == (True, "default")
    assert parse_security_opt(("seccomp:p.json", "apparmor=x"), str(tmp_path)) == (True, {"defaultAction": "SCMP_ACT_ALLOW"})


def test_unknown_spec_fields_are_ignored():
    d = ContainerSpec(id="a", rootfs="/r", argv=["x"]).to_dict()
    d["from_the_future"] = 1
    assert ContainerSpec.from_dict(d).id == "a"


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", ".hidden", "-x", "x" * 129, "a b"])
def test_container_ids_are_safe_path_components(bad):
    with pytest.raises(ValueError, match="invalid container id"):
        ContainerSpec(id=bad, rootfs="/r", argv=["x"])


def test_working_dir_must_be_absolute():
    with pytest.raises(ValueError, match="not an absolute path"):
        ContainerSpec(id="a", rootfs="/r", argv=["x"], cwd="srv")


def test_from_service_user_namespace_needs_a_range():
    svc = Service(name="s", command=("true",), x=ServiceExtras(rootfs="/r", userns=True))
    with pytest.raises(UnsupportedOption, match="userns_range"):
        from_service(svc, id="x")
    assert from_service(svc, id="x", userns_range=(300000, 65536)).uid_map == ((0, 300000, 65536),)
    assert from_service(svc, id="x", userns_range=(300000, 65536)).idmap
    # userns_mode: host wins over x-pysup.userns
    host = Service(name="s", command=("true",), userns_mode="host", x=ServiceExtras(rootfs="/r", userns="auto"))
    assert from_service(host, id="x").uid_map == ()


def test_userns_auto_is_per_container_true_per_service():
    from supervisor.runtime import userns

    auto = Service(name="s", command=("true",), x=ServiceExtras(rootfs="/r", userns="auto"))
    shared = Service(name="s", command=("true",), x=ServiceExtras(rootfs="/r", userns=True))
    mode = Service(name="s", command=("true",), userns_mode="auto", x=ServiceExtras(rootfs="/r"))
    assert userns.per_container(auto) and userns.per_container(mode) and not userns.per_container(shared)
    assert all(userns.wanted(s) for s in (auto, shared, mode))


def test_namespace_flags_and_id_maps():
    from supervisor import syscalls as S
    from supervisor.runtime import zygote as Z

    base = ContainerSpec(id="a", rootfs="/r", argv=["x"])
    assert Z.namespace_flags(base) == Z.DEFAULT_NAMESPACES
    assert Z.namespace_flags(attrs.evolve(base, host_net=True, host_pid=True)) == (
        Z.DEFAULT_NAMESPACES & ~(S.CLONE_NEWNET | S.CLONE_NEWPID))
    userns = attrs.evolve(base, uid_map=[(0, 100000, 1000), (1000, 5000, 1)])
    assert Z.namespace_flags(userns) & S.CLONE_NEWUSER
    assert Z.clone_flags(userns) & S.CLONE_PARENT and not Z.clone_flags(userns) & S.CLONE_NEWCGROUP
    assert Z._host_id(userns.uid_map, 0) == 100000 and Z._host_id(userns.uid_map, 1000) == 5000
    assert Z._host_id(userns.uid_map, 1001) is None


def test_for_run_builds_a_spec_like_docker_run(monkeypatch):
    from supervisor.runtime.spec import for_run, parse_volume

    monkeypatch.setenv("FROM_HOST", "h")
    spec = for_run(["sh", "-c", "x"], rootfs="/r", id="pysup-test-run", env=("A=1", "FROM_HOST", "UNSET_PYSUP_X"),
                   volumes=("/data:/d:ro", "/src:/s"), workdir="/w", user="app", hostname="h1", read_only=True,
                   cap_add=("net_admin",), cap_drop=("MKNOD",), network="none", init=True,
                   security_opt=("seccomp=unconfined",), tmpfs=("/run:size=64m,mode=1777",),
                   ulimits=("nofile=1024:2048", "nproc=10"), sysctls=("net.ipv4.ip_forward=1",))
    assert spec.argv == ("sh", "-c", "x") and spec.env == (("A", "1"), ("FROM_HOST", "h"))
    assert spec.mounts[0] == parse_volume("/data:/d:ro") and spec.mounts[0].read_only
    assert spec.mounts[2] == MountSpec(type="tmpfs", target="/run", tmpfs_size=64 << 20, tmpfs_mode=0o1777)
    assert (spec.cwd, spec.user, spec.hostname, spec.read_only, spec.init) == ("/w", "app", "h1", True, True)
    assert "CAP_NET_ADMIN" in spec.capabilities and "CAP_MKNOD" not in spec.capabilities
    assert spec.seccomp is None and not spec.host_net
    assert spec.rlimits == (Rlimit(name="nofile", soft=1024, hard=2048), Rlimit(name="nproc", soft=10, hard=10))
    assert spec.sysctls == (("net.ipv4.ip_forward", "1"),)
    assert len(for_run(["true"], rootfs="/r").id) == 32


@pytest.mark.parametrize(("kw", "message"), [
    (dict(volumes=("rel:/d",)), "absolute host path"),
    (dict(volumes=("/a:/d:bogus",)), "unknown option"),
    (dict(network="bridge0"), "network"),
    (dict(cap_add=("WIZARD",)), "unknown capability"),
    (dict(ulimits=("nofile=x",)), "ulimit"),
    (dict(sysctls=("net.x=1",), network="host"), "host's network"),
])
def test_for_run_refusals(kw, message):
    from supervisor.runtime.spec import UnsupportedOption, for_run

    with pytest.raises(UnsupportedOption, match=message):
        for_run(["true"], rootfs="/r", **kw)


def test_from_service_volumes_named_and_anonymous(tmp_path):
    from supervisor.runtime import volumes

    svc = Service(name="db", command=("true",), x=ServiceExtras(rootfs="/r"),
                  volumes=(Mount(type="volume", source="data", target="/var/lib/db"),
                           Mount(type="volume", target="/cache"),
                           Mount(type="volume", source="logs", target="/logs", read_only=True)))
    vroot = str(tmp_path / "volumes")
    anon = volumes.anonymous_dir("pysup-test-db-1", vroot)
    spec = from_service(svc, id="pysup-test-db-1", volumes_dir=vroot, volume_names={"data": "shop_data"},
                        anonymous_dir=anon)
    assert [(m.source, m.target, m.read_only) for m in spec.mounts] == [
        (f"{vroot}/shop_data", "/var/lib/db", False), (f"{anon}/1", "/cache", False), (f"{vroot}/logs", "/logs", True)]
    made = volumes.prepare(spec, volumes_root=vroot, anonymous=anon)
    assert sorted(os.listdir(vroot)) == [".anonymous", "logs", "shop_data"] and os.listdir(anon) == ["1"]
    assert f"{anon}/1" in made
    with pytest.raises(volumes.VolumeError, match="exist already"):
        volumes.prepare(spec, volumes_root=vroot, anonymous=anon)
    assert os.listdir(anon) == ["1"], "another container's anonymous volumes were touched"
    volumes.remove_anonymous(path=anon)
    assert os.listdir(os.path.join(vroot, ".anonymous")) == [] and os.path.isdir(f"{vroot}/shop_data")
    with pytest.raises(UnsupportedOption, match="anonymous volume /cache"):
        from_service(svc, id="x", volumes_dir=vroot)
    with pytest.raises(volumes.VolumeError):
        volumes.named("../etc", vroot)
    with pytest.raises(volumes.VolumeError, match="does not exist"):
        volumes.named("external1", vroot, create=False)


def test_the_idmap_opt_in_reaches_the_mount_spec():
    from supervisor.runtime.spec import for_run, parse_volume

    svc = Service(name="s", command=("true",), x=ServiceExtras(rootfs="/r", userns=True),
                  volumes=(Mount(type="bind", source="/h", target="/a", idmap=True), Mount(type="bind", source="/h",
                           target="/b"), Mount(type="volume", source="v", target="/v")))
    spec = from_service(svc, id="x", userns_range=(300000, 65536), volumes_dir="/vols")
    assert [m.idmap for m in spec.mounts] == [True, False, False] and spec.mounts[2].owned
    assert parse_volume("/h:/c:rw,idmap") == MountSpec(type="bind", source="/h", target="/c", idmap=True)
    assert parse_volume("/h:/c:idmap,ro,rslave") == MountSpec(type="bind", source="/h", target="/c", idmap=True,
                                                               read_only=True, propagation="rslave")
    assert not parse_volume("/h:/c").idmap
    assert for_run(["true"], rootfs="/r", volumes=("/h:/c:idmap",)).mounts[0].idmap
    assert ContainerSpec.from_json(spec.to_json()).mounts == spec.mounts


def test_idmap_bind_decides_which_binds_are_idmapped():
    from supervisor.runtime import zygote as Z

    userns = ContainerSpec(id="a", rootfs="/r", argv=["x"], uid_map=((0, 100000, 65536),), idmap=True)
    privileged = userns.replace(privileged=True)
    host_rw = MountSpec(type="bind", source="/h", target="/h")
    host_rw_idmap = host_rw.replace(idmap=True)
    host_ro_idmap = host_rw.replace(idmap=True, read_only=True)
    volume = host_rw.replace(owned=True)

    def chosen(spec):
        return [Z.idmap_bind(spec, m) for m in (host_rw, host_rw_idmap, host_ro_idmap, volume)]

    # a writable host directory only with the opt-in; read-only ones as before
    assert chosen(userns) == [False, True, True, True]
    # CAP_SYS_ADMIN inside: a read-only one is not idmapped even with the opt-in (a remount would
    # make it writable as host root); a writable one with the opt-in gains nothing from a remount
    assert chosen(privileged) == [False, True, False, True]
    # no user namespace: nothing is idmapped, the opt-in changes nothing
    assert chosen(userns.replace(uid_map=())) == [False] * 4


def test_run_volume_arguments():
    from supervisor.runtime.run import RunError, split_volume_args

    assert split_volume_args(("/h:/c:ro", "data:/d", "logs:/l:ro", "/anon")) == (
        ["/h:/c:ro"], [("data", "/d", ""), ("logs", "/l", "ro")], ["/anon"])
    # idmap on a named volume: accepted (a volume is idmapped anyway), as in a compose file
    assert split_volume_args(("/h:/c:idmap", "data:/d:rw,idmap")) == (["/h:/c:idmap"], [("data", "/d", "rw,idmap")], [])
    for bad in ("data:/d:z", "da/ta:/d", "anon", "data:relative"):
        with pytest.raises(RunError):
            split_volume_args((bad,))
