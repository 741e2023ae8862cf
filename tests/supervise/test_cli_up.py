"""The `up` subcommand's arguments (the runs themselves are tests/integration/test_up_*.py)."""

from supervisor import cli


def test_up_options_parse():
    args = cli.build_parser().parse_args(["-f", "a.yaml", "up", "-p", "shop", "--exit-code-from", "job",
                                          "--no-log-prefix", "--no-color"])
    assert args.handler is cli.cmd_up
    assert args.files == ["a.yaml"] and args.project_name == "shop"
    assert args.exit_code_from == "job" and args.no_log_prefix and args.no_color
    assert not args.abort_on_container_exit


def test_exit_code_from_unknown_service_is_one_line(tmp_path, capsys):
    f = tmp_path / "compose.yaml"
    f.write_text("services:\n  job: {image: busybox, command: [x]}\n")
    assert cli.main(["up", "-f", str(f), "--exit-code-from", "nope"]) == 1
    assert capsys.readouterr().err.strip() == "pysup: --exit-code-from nope: no such service"
