"""`pysup config` as a person runs it: a real process, its output, its exit status."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pysup(*args: str, cwd: str = ROOT, stdin: str | None = None, env: dict | None = None):
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args], cwd=cwd, input=stdin, capture_output=True, text=True,
        env=full_env | {"PYTHONPATH": ROOT}, timeout=60,
    )


def test_config_prints_the_resolved_demo_stack():
    r = pysup("config", "-f", "examples/compose/demo.yaml", "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["name"] == "pysup-demo"
    assert set(out["services"]) == {"db", "web", "flaky"}
    assert out["services"]["web"]["environment"]["GREETING"] == "hello from pysup"


def test_services_and_quiet():
    r = pysup("-f", "examples/compose/demo.yaml", "config", "--services")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["db", "flaky", "web"]
    r = pysup("config", "-q", "-f", "examples/compose/demo.yaml")
    assert (r.returncode, r.stdout) == (0, "")


def test_a_bad_file_gives_located_errors_and_status_1_without_traceback(tmp_path):
    (tmp_path / "stack.yaml").write_text(
        "services:\n  web:\n    image: busybox\n    ports:\n      - 80\n      - \"80:abc\"\n"
    )
    r = pysup("config", "-f", "stack.yaml", cwd=str(tmp_path))
    assert r.returncode == 1
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == 'stack.yaml:6:9: services.web.ports[1]: invalid port "80:abc"'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services:\n  a: {image: x}\n  a: {image: y}\n", "stack.yaml:3:3: duplicate key 'a' (first defined at line 2)"),
        ("", "stack.yaml: the file is empty"),
        ("services:\n  a:\n    image: x\n    restart: sometimes\n", "stack.yaml:4:14: services.a.restart:"),
    ],
)
def test_refusals_are_one_line_each(tmp_path, text, expected):
    (tmp_path / "stack.yaml").write_text(text)
    r = pysup("config", "-f", "stack.yaml", cwd=str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(expected), r.stderr


def test_default_file_found_in_a_parent_directory_and_stdin(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  a: {image: x}\n")
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    r = pysup("config", "--services", cwd=str(sub))
    assert (r.returncode, r.stdout) == (0, "a\n"), r.stderr
    r = pysup("config", "--services", "-f", "-", "-p", "piped", cwd=str(tmp_path), stdin="services:\n  b: {image: y}\n")
    assert (r.returncode, r.stdout) == (0, "b\n"), r.stderr


def test_no_compose_file_is_a_clear_error(tmp_path):
    r = pysup("config", cwd=str(tmp_path))
    assert r.returncode == 1
    assert "no compose file found" in r.stderr and "Traceback" not in r.stderr


def test_warnings_name_the_key_and_service(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n    build: .\n")
    r = pysup("config", "-q", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "compose.yaml:4:5: services.web.build: \"build\" is not supported by pysup" in r.stderr


def test_warnings_before_a_failure_are_shown_with_it(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: ${IMAGE}\n    restart: ${POLICY}x\n")
    r = pysup("config", "-q", cwd=str(tmp_path))
    assert r.returncode == 1
    assert 'variable "IMAGE" is not set' in r.stderr
    assert r.stderr.rstrip().splitlines()[-1].startswith("compose.yaml:4:14: services.web.restart:")


def test_project_directory_is_where_the_default_file_is_found(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "compose.yaml").write_text("services:\n  a: {image: x}\n")
    r = pysup("--project-directory", "proj", "config", "--services", cwd=str(tmp_path))
    assert (r.returncode, r.stdout) == (0, "a\n"), r.stderr


def test_several_default_files_warn_and_the_first_wins(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  a: {image: x}\n")
    (tmp_path / "docker-compose.yml").write_text("services:\n  b: {image: x}\n")
    r = pysup("config", "--services", cwd=str(tmp_path))
    assert (r.returncode, r.stdout) == (0, "a\n"), r.stderr
    assert "found several compose files (compose.yaml, docker-compose.yml); using compose.yaml" in r.stderr
